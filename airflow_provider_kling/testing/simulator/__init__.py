"""
A local stand-in for the ModelVerse task API (``https://api.modelverse.cn``) serving Kling V3 Omni tasks.

:class:`KlingSimulator` is a real HTTP/1.1 server on ``127.0.0.1`` for tests, demos and users' own tests::

    from airflow_provider_kling.testing import KlingSimulator

    with KlingSimulator(api_key="sim-key", task_seconds=2.0) as sim:
        ...  # point a "kling" connection at sim.base_url with password "sim-key"

or, from the command line, ``kling-simulator --port 8089 --api-key sim-key --task-seconds 5`` (also
``python -m airflow_provider_kling.testing ...``).

The API, as ``shared/spec/kling-v3-omni-api.md`` documents it:

* ``POST /v1/tasks/submit``: the header ``Authorization: <key>`` carries the bare key (a ``Bearer `` prefix,
  a wrong or a missing key is a 401). The JSON body is validated with
  :class:`~airflow_provider_kling.models.KlingVideoRequest` (rules R1..R22); a violation is a 400 with
  vendor code ``006001099`` and the rule messages. ``external_task_id`` must be unique per key. An
  ``s3://`` input URL (which the models accept, for the operator to resolve) is refused the same way.
* ``GET /v1/tasks/status?task_id=...``: a task is ``Pending`` for the first fifth of ``task_seconds``,
  then ``Running``, then ``Success`` (or ``Failure``, see :meth:`KlingSimulator.fail_next_tasks`).
* ``GET /results/<task_id>/<n>.mp4`` (``n`` from 1; the URLs a successful task reports): a real, playable
  H.264 MP4 in the requested aspect ratio, with ``Range`` support; it expires ``result_ttl_seconds`` after
  the task finished (403). Result URLs need no key, like the vendor's pre-signed URLs.

Errors use the OpenAI-style body ModelVerse documents: ``{"error": {"message", "type", "param", "code"}}``.
Every API response carries an ``X-Request-Id`` header.

Test-only extensions live under ``/_simulator/`` and need **no key**: anyone who can reach the port can use
them, which is why the simulator binds ``127.0.0.1`` by default. So that a web page open in the developer's
browser cannot use them either, they answer only requests whose ``Host`` is a loopback name
(``127.0.0.1``, ``localhost`` or ``[::1]``, with an optional port; else 403: no DNS rebinding), and a POST
or PUT only with ``Content-Type: application/json`` (else 415; send ``{}`` for no options: no cross-site
form or ``text/plain`` request). They are not part of the vendor's API:

============================================  ================================================================
``POST /_simulator/faults``                   inject a fault: ``{"endpoint", "kind", "times", ...options}``
``GET /_simulator/faults``                    the faults still pending
``DELETE /_simulator/faults``                 drop every pending fault
``POST /_simulator/fail-next-tasks``          ``{"n": 1, "message": "..."}``: the next tasks end in Failure
``POST /_simulator/reset``                    forget every task, fault, counter and setting change
``GET /_simulator/stats``                     request counters, connections, bytes served
``GET /_simulator/submitted``                 the accepted submit bodies, in order (one per billed task)
``GET /_simulator/tasks?external_task_id=X``  the tasks (all, or those with that ``external_task_id``), as
                                              status bodies: the spec says a task "can also be looked up"
                                              by its external id without naming a parameter, so this
                                              lookup is a simulator extension, not an emulated endpoint
``GET|POST /_simulator/config``               read or change ``task_seconds``, ``results_per_task``,
                                              ``result_ttl_seconds``, ``result_size_bytes``,
                                              ``max_active_tasks`` (capacity: while that many tasks are
                                              Pending or Running, a submit gets 429 with vendor code
                                              ``006001094``, "task resources insufficient", and creates
                                              nothing; ``null``: no limit)
``POST /_simulator/advance``                  ``{"seconds": N}``: move the simulator's clock forward
============================================  ================================================================

``stats`` also reports ``active_tasks`` (Pending or Running now), ``active_tasks_peak`` (the most at once
since the last reset) and ``capacity_refusals`` (submits refused for ``max_active_tasks``).

:class:`~airflow_provider_kling.testing.simulator_client.KlingSimulatorClient` wraps them for other processes.

This module only re-exports the public names; the code lives in ``errors`` (the error, number checks),
``faults`` (fault injection), ``media`` (the result videos), ``replies`` (canned answers), ``state``
(tasks, clock, settings, capacity, counters), ``server`` (the HTTP routes, admin routes included),
``control`` (:class:`KlingSimulator`) and ``cli`` (``kling-simulator``).
"""

from __future__ import annotations

from airflow_provider_kling.testing.simulator.cli import DEFAULT_CLI_PORT, main
from airflow_provider_kling.testing.simulator.control import (
    DEFAULT_API_KEY,
    DEFAULT_RESULT_TTL_SECONDS,
    KlingSimulator,
)
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError
from airflow_provider_kling.testing.simulator.faults import Endpoint, Fault, FaultKind, make_fault
from airflow_provider_kling.testing.simulator.media import MEDIA_FILES, ResultBody, result_video

# The simulator's tests import these two private helpers from here, as before the split.
from airflow_provider_kling.testing.simulator.server import _parse_range as _parse_range
from airflow_provider_kling.testing.simulator.state import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_FAILURE_MESSAGE,
    EDIT_USAGE_SECONDS,
    SimulatedTask,
)
from airflow_provider_kling.testing.simulator.state import _validation_message as _validation_message

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_ASPECT_RATIO",
    "DEFAULT_CLI_PORT",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_RESULT_TTL_SECONDS",
    "EDIT_USAGE_SECONDS",
    "MEDIA_FILES",
    "Endpoint",
    "Fault",
    "FaultKind",
    "KlingSimulator",
    "KlingSimulatorError",
    "ResultBody",
    "SimulatedTask",
    "main",
    "make_fault",
    "result_video",
]
