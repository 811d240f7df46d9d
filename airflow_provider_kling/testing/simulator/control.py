"""The Python API: :class:`KlingSimulator` starts, stops, configures and inspects a simulator."""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_kling.constants import RESULT_URL_TTL_HOURS
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError
from airflow_provider_kling.testing.simulator.faults import Fault, make_fault
from airflow_provider_kling.testing.simulator.media import MEDIA_FILES, result_video
from airflow_provider_kling.testing.simulator.server import _Server
from airflow_provider_kling.testing.simulator.state import (
    DEFAULT_FAILURE_MESSAGE,
    SimulatedTask,
    _Settings,
    _State,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_kling.testing.simulator.faults import Endpoint, FaultKind

log = logging.getLogger(__name__)

#: The key the simulator accepts unless told otherwise (a test key, not a secret).
DEFAULT_API_KEY: Final = "sim-key"
#: How long result URLs stay valid by default, in seconds (the vendor's sibling APIs keep them 24 h).
DEFAULT_RESULT_TTL_SECONDS: Final = RESULT_URL_TTL_HOURS * 3600.0


class KlingSimulator:
    """
    A local ModelVerse task API for Kling V3 Omni: a real HTTP/1.1 server on a background thread.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`)::

        with KlingSimulator(api_key="sim-key", task_seconds=2.0) as sim:
            sim.inject_fault("submit", "rate_limit", retry_after=1)
            ...  # talk to sim.base_url with "Authorization: sim-key"
            assert len(sim.submitted) == 1

    The settings ``task_seconds``, ``results_per_task``, ``result_ttl_seconds``, ``result_size_bytes`` and
    ``max_active_tasks`` can be changed while it runs (the first four apply to tasks created afterwards);
    :meth:`reset` restores the values given here.

    :param api_key: the key the API accepts (bare, in the ``Authorization`` header).
    :param host: the address to bind; keep the default ``127.0.0.1``: the ``/_simulator/`` admin API has
        no authentication.
    :param port: the port to bind; 0 picks a free one (read it back from :attr:`base_url`).
    :param task_seconds: how long a task takes from submit to ``Success`` (``Pending`` for the first fifth,
        then ``Running``); 0 finishes tasks at once.
    :param results_per_task: how many result URLs a successful task reports.
    :param result_ttl_seconds: how long after a task finished its result URLs answer (then 403).
    :param result_size_bytes: serve results padded to exactly this many bytes (a real MP4 followed by an
        MP4 ``free`` box, streamed in constant memory), for large-download tests and benchmarks; ``None``
        serves the plain few-kilobyte videos.
    :param additional_api_keys: more accepted keys, each its own "user" (tasks and ``external_task_id``
        values are scoped per key).
    :param max_active_tasks: how many tasks may be ``Pending`` or ``Running`` at once (by the simulator's
        clock, across every key); a submit beyond that is refused as the vendor does when "task resources
        are insufficient": 429 with vendor code ``006001094`` and ``Retry-After: 1`` (the answer of a
        ``rate_limit`` fault with its defaults), creating and billing nothing. ``None``: no limit.
        ``stats()`` counts the refusals (``capacity_refusals``) and the most tasks ever active at once
        (``active_tasks_peak``).
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        task_seconds: float = 2.0,
        results_per_task: int = 1,
        result_ttl_seconds: float = DEFAULT_RESULT_TTL_SECONDS,
        result_size_bytes: int | None = None,
        additional_api_keys: Sequence[str] = (),
        max_active_tasks: int | None = None,
    ) -> None:
        if not api_key or any(not key for key in additional_api_keys):
            raise KlingSimulatorError("API keys must be non-empty strings")
        settings = _Settings.checked(
            task_seconds=task_seconds,
            results_per_task=results_per_task,
            result_ttl_seconds=result_ttl_seconds,
            result_size_bytes=result_size_bytes,
            max_active_tasks=max_active_tasks,
        )
        self._api_key = api_key
        self._host = host
        self._port = port
        self._state = _State([api_key, *additional_api_keys], settings)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self._state.base_url or f"{self._host}:{self._port} (stopped)"
        return f"KlingSimulator({where}, task_seconds={self._state.settings.task_seconds:g})"

    # Lifecycle --------------------------------------------------------------------------------

    def start(self) -> KlingSimulator:
        """Bind the port and serve on a background thread; return ``self``."""
        if self._server is not None:
            raise KlingSimulatorError("The simulator is already running")
        for ratio in MEDIA_FILES:  # Fail now, not on the first download, if the media are missing.
            result_video(ratio)
        self._stopping.clear()
        server = _Server((self._host, self._port), self._state, self._stopping)
        host, port = server.server_address[:2]
        display = str(host)
        if ipaddress.ip_address(display).version == 6:
            display = f"[{display}]"
        self._state.base_url = f"http://{display}:{port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="kling-simulator", daemon=True
        )
        self._thread.start()
        log.info("Kling simulator serving on %s", self._state.base_url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """
        Stop serving, close every connection and join the server's threads.

        :param timeout: how long to wait for open connections' threads, in seconds.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections(timeout)
        thread.join(timeout)
        self._server = self._thread = None
        log.info("Kling simulator on %s stopped", self._state.base_url)

    def __enter__(self) -> KlingSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Where ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the connection's host."""
        if not self._state.base_url:
            raise KlingSimulatorError("The simulator has not been started")
        return self._state.base_url

    @property
    def api_key(self) -> str:
        """The key the API accepts (the connection's password)."""
        return self._api_key

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._thread is not None and self._thread.is_alive()

    # Settings ---------------------------------------------------------------------------------

    @property
    def task_seconds(self) -> float:
        """How long a new task takes to finish, in seconds."""
        return self._state.settings.task_seconds

    @task_seconds.setter
    def task_seconds(self, value: float) -> None:
        self._state.configure(task_seconds=value)

    @property
    def results_per_task(self) -> int:
        """How many result URLs a new successful task reports."""
        return self._state.settings.results_per_task

    @results_per_task.setter
    def results_per_task(self, value: int) -> None:
        self._state.configure(results_per_task=value)

    @property
    def result_ttl_seconds(self) -> float:
        """How long a new task's result URLs stay valid after it finished, in seconds."""
        return self._state.settings.result_ttl_seconds

    @result_ttl_seconds.setter
    def result_ttl_seconds(self, value: float) -> None:
        self._state.configure(result_ttl_seconds=value)

    @property
    def result_size_bytes(self) -> int | None:
        """The padded size of a new task's results, or ``None`` for the plain videos."""
        return self._state.settings.result_size_bytes

    @result_size_bytes.setter
    def result_size_bytes(self, value: int | None) -> None:
        self._state.configure(result_size_bytes=value)

    @property
    def max_active_tasks(self) -> int | None:
        """
        How many tasks may be ``Pending`` or ``Running`` at once, or ``None`` for no limit.

        A submit beyond it gets 429 with vendor code ``006001094`` (task resources insufficient) and
        creates nothing. Lowering it refuses new submits only; active tasks carry on.
        """
        return self._state.settings.max_active_tasks

    @max_active_tasks.setter
    def max_active_tasks(self, value: int | None) -> None:
        self._state.configure(max_active_tasks=value)

    # Faults and failures --------------------------------------------------------------------------

    def inject_fault(
        self,
        endpoint: Endpoint,
        kind: FaultKind,
        *,
        times: int = 1,
        after_create: bool = False,
        **options: Any,
    ) -> Fault:
        """
        Make the next ``times`` requests to an endpoint fail; faults on one endpoint fire in order.

        A fault fires before the key is checked, as a gateway's would; ``after_create=True`` (submit only)
        first creates (and bills) the task, then fails, so a test can check a client never pays twice (if
        the submit is refused, for a bad key or body or for lack of capacity, the refusal is answered and
        the fault is used up).

        Besides these one-off faults, :attr:`max_active_tasks` makes the simulator refuse every submit while
        that many tasks are active, with the same answer as a ``rate_limit`` fault with its defaults.

        ========================  =================================================  =========================
        kind                      what the client gets                               options (default)
        ========================  =================================================  =========================
        ``rate_limit``            429, ``Retry-After`` header, JSON error body       ``retry_after`` (1; None:
                                                                                     no header; text: sent
                                                                                     as is), ``code``
                                                                                     (``006001094``),
                                                                                     ``message``
        ``server_error``          500/502/503/504 with a JSON error body             ``status`` (500),
                                                                                     ``code`` (``006001095``),
                                                                                     ``message``
        ``html_error``            a proxy's HTML error page                          ``status`` (502)
        ``malformed_json``        200 with a truncated JSON body (submit, status)
        ``slow``                  the normal answer, after a delay                   ``delay`` (1.0 s)
        ``reset``                 the connection is reset, nothing is answered
        ``truncate``              (result) full ``Content-Length``, half the bytes
        ``gzip``                  (result) the whole video, ``Content-Encoding:
                                  gzip``
        ``endless``               (result) ``200`` with no length and a body of      ``seconds`` (30)
                                  zeros that goes on until the client leaves
        ``expired``               (result) 403 with an S3-style XML body
        ========================  =================================================  =========================

        :param endpoint: ``submit``, ``status`` or ``result``.
        :param kind: one of the kinds above.
        :param times: how many requests it applies to.
        :param after_create: submit only: create the task, then fail.
        :param options: the kind's options (unknown names are an error).
        :return: the fault, defaults filled in.
        :raises KlingSimulatorError: on an invalid endpoint, kind or option.
        """
        fault = make_fault(endpoint, kind, times=times, after_create=after_create, **options)
        self._state.add_fault(fault)
        return fault

    @property
    def pending_faults(self) -> list[Fault]:
        """The faults that have not fired yet (by endpoint, in firing order)."""
        return self._state.pending_faults()

    def clear_faults(self) -> int:
        """Drop every pending fault; return how many there were."""
        return self._state.clear_faults()

    def fail_next_tasks(self, n: int = 1, message: str = DEFAULT_FAILURE_MESSAGE) -> None:
        """
        Make the next ``n`` created tasks end in ``Failure`` with ``error_message`` ``message``.

        :param n: how many tasks.
        :param message: their ``output.error_message``.
        """
        self._state.fail_next(n, message)

    def advance_time(self, seconds: float) -> None:
        """
        Move the simulator's clock forward: tasks progress and result URLs expire without waiting.

        :param seconds: how far, in seconds.
        """
        self._state.advance(seconds)

    def reset(self) -> None:
        """Forget every task, submitted body, fault, failure, counter, clock offset and setting change."""
        self._state.reset()

    # What happened ----------------------------------------------------------------------------

    @property
    def submitted(self) -> list[dict[str, Any]]:
        """The accepted submit bodies, in order: one per created (billed) task."""
        return self._state.submitted()

    @property
    def requests(self) -> dict[str, int]:
        """Requests received per endpoint: ``submit``, ``status``, ``result``, ``admin``, ``other``."""
        counts = self._state.stats()["requests"]
        return {name: counts.get(name, 0) for name in ("submit", "status", "result", "admin", "other")}

    @property
    def tasks(self) -> list[SimulatedTask]:
        """Snapshots of every task, in creation order."""
        return self._state.tasks()

    def get_task(self, task_id: str) -> SimulatedTask:
        """
        Return a snapshot of one task.

        :param task_id: the API's task id.
        :raises KeyError: if there is no such task.
        """
        return self._state.task(task_id)

    def find_tasks(self, *, external_task_id: str) -> list[SimulatedTask]:
        """
        Return the tasks created with an ``external_task_id`` (one per key that used it).

        :param external_task_id: the caller's id.
        """
        return self._state.tasks(external_task_id)

    def stats(self) -> dict[str, Any]:
        """
        Counters: requests, responses by status, tasks, faults fired, connections, bytes served.

        Also ``active_tasks`` (``Pending`` or ``Running`` now, by the simulator's clock),
        ``active_tasks_peak`` (the most ever active at once since the last :meth:`reset`) and
        ``capacity_refusals`` (submits refused by :attr:`max_active_tasks`), and the current ``settings``.
        """
        return self._state.stats()
