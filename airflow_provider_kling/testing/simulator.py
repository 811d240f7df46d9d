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
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import heapq
import hmac
import ipaddress
import json
import logging
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, get_args
from urllib.parse import parse_qs, urlsplit

import pydantic

from airflow_provider_kling.constants import (
    RESULT_URL_TTL_HOURS,
    STATUS_PATH,
    SUBMIT_PATH,
    VENDOR_CODE_RESOURCES_INSUFFICIENT,
    VENDOR_CODE_RESPONSE_ERROR,
    VENDOR_CODE_TASK_CREATION_ERROR,
)
from airflow_provider_kling.models import (
    DEFAULT_DURATION,
    KlingVideoRequest,
    TaskStatus,
    ignored_field_warnings_suppressed,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from types import FrameType

log = logging.getLogger(__name__)

#: The key the simulator accepts unless told otherwise (a test key, not a secret).
DEFAULT_API_KEY: Final = "sim-key"
#: The port ``kling-simulator`` listens on by default.
DEFAULT_CLI_PORT: Final = 8089
#: How long result URLs stay valid by default, in seconds (the vendor's sibling APIs keep them 24 h).
DEFAULT_RESULT_TTL_SECONDS: Final = RESULT_URL_TTL_HOURS * 3600.0
#: ``usage.duration`` of a video edit (``refer_type: base``), whose real length is the input video's: the
#: simulator does not download it and bills the API's default duration.
EDIT_USAGE_SECONDS: Final = DEFAULT_DURATION
#: The aspect ratio of the result of an edit, which may leave ``aspect_ratio`` out (R4).
DEFAULT_ASPECT_RATIO: Final = "16:9"
#: The committed result videos (``media/``), by aspect ratio: 2 s, 24 fps, H.264 (see
#: ``tools/generate_video_fixtures.py``).
MEDIA_FILES: Final[Mapping[str, str]] = {
    "16:9": "result_16x9.mp4",
    "9:16": "result_9x16.mp4",
    "1:1": "result_1x1.mp4",
}
#: The default ``error_message`` of a task made to fail by :meth:`KlingSimulator.fail_next_tasks`.
DEFAULT_FAILURE_MESSAGE: Final = "Simulated failure: the video could not be generated"

Endpoint = Literal["submit", "status", "result"]
FaultKind = Literal[
    "rate_limit",
    "server_error",
    "html_error",
    "malformed_json",
    "slow",
    "reset",
    "truncate",
    "expired",
    "gzip",
    "endless",
]

_ENDPOINTS: Final = frozenset(get_args(Endpoint))
_API_ENDPOINTS: Final = frozenset({"submit", "status"})
#: Which endpoints each fault kind applies to, and its options with their defaults.
_FAULT_SPECS: Final[Mapping[str, tuple[frozenset[str], Mapping[str, Any]]]] = {
    "rate_limit": (
        _ENDPOINTS,
        {
            "retry_after": 1,
            "code": VENDOR_CODE_RESOURCES_INSUFFICIENT,
            "message": "Rate limit reached: task resources insufficient, retry later",
        },
    ),
    "server_error": (
        _ENDPOINTS,
        {"status": 500, "code": VENDOR_CODE_RESPONSE_ERROR, "message": "Task response error"},
    ),
    "html_error": (_ENDPOINTS, {"status": 502}),
    "malformed_json": (_API_ENDPOINTS, {}),
    "slow": (_ENDPOINTS, {"delay": 1.0}),
    "reset": (_ENDPOINTS, {}),
    "truncate": (frozenset({"result"}), {}),
    "gzip": (frozenset({"result"}), {}),
    "endless": (frozenset({"result"}), {"seconds": 30.0}),
    "expired": (frozenset({"result"}), {}),
}
_SERVER_ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
_MAX_DELAY_SECONDS: Final = 300.0
_MAX_BODY_BYTES: Final = 128 * 1024 * 1024
_CHUNK_BYTES: Final = 256 * 1024
_ZEROS: Final = memoryview(bytes(_CHUNK_BYTES))
_RESULT_PATH: Final = re.compile(r"^/results/(?P<task_id>[0-9a-f]{32})/(?P<index>[1-9][0-9]{0,2})\.mp4$")
_RANGE: Final = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")
_PYDANTIC_PREFIXES: Final = ("Value error, ", "Assertion failed, ")


class KlingSimulatorError(Exception):
    """A simulator setting or fault is invalid (raised by the Python API, a 400 over HTTP)."""


# --------------------------------------------------------------------------------------------------
# Result bodies
# --------------------------------------------------------------------------------------------------


@cache
def result_video(aspect_ratio: str) -> bytes:
    """
    Return the committed result video for an aspect ratio (a real H.264 MP4 of a few kilobytes).

    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
    """
    try:
        name = MEDIA_FILES[aspect_ratio]
    except KeyError:
        raise KlingSimulatorError(f"No result video for aspect ratio {aspect_ratio!r}") from None
    return (resources.files(__package__) / "media" / name).read_bytes()


def _smallest_padded_size() -> int:
    """The smallest ``result_size_bytes``: the largest video plus an 8-byte ``free`` box header."""
    return max(len(result_video(ratio)) for ratio in MEDIA_FILES) + 8


class ResultBody:
    """
    The bytes of one result video, optionally padded to an exact size.

    The committed MP4 is followed, if ``size`` asks for more, by an MP4 ``free`` box that pads it to exactly
    ``size`` bytes (the file stays playable: players skip ``free`` boxes).

    The padding is produced on the fly in chunks, so a multi-gigabyte result costs constant memory.

    :param video: the MP4 file.
    :param size: the total size in bytes; ``None`` serves ``video`` unpadded.
    """

    def __init__(self, video: bytes, size: int | None = None) -> None:
        if size is None or size == len(video):
            self._head = video
            self.size = len(video)
            return
        padding = size - len(video)
        if padding < 8:
            raise KlingSimulatorError(
                f"A padded result must be at least {len(video) + 8} bytes (the video and an 8-byte box "
                f"header), not {size}"
            )
        if padding <= 0xFFFFFFFF:
            header = struct.pack(">I4s", padding, b"free")
        else:  # A box over 4 GiB uses the 64-bit "largesize" form.
            header = struct.pack(">I4sQ", 1, b"free", padding)
        self._head = video + header
        self.size = size

    def iter_range(self, start: int, stop: int) -> Iterator[bytes | memoryview]:
        """
        Yield the bytes ``[start, stop)`` in chunks of at most 256 KiB.

        :param start: the first byte.
        :param stop: one past the last byte.
        """
        stop = min(stop, self.size)
        position = start
        head = memoryview(self._head)
        while position < stop and position < len(head):
            end = min(stop, len(head), position + _CHUNK_BYTES)
            yield head[position:end]
            position = end
        while position < stop:
            end = min(stop, position + _CHUNK_BYTES)
            yield _ZEROS[: end - position]
            position = end


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """
    An injected fault (see :meth:`KlingSimulator.inject_fault`).

    :param endpoint: ``submit``, ``status`` or ``result``.
    :param kind: what goes wrong.
    :param times: how many more requests it applies to.
    :param after_create: on ``submit``: create (and bill) the task first, then fail.
    :param options: the kind's options, defaults filled in.
    """

    endpoint: str
    kind: str
    times: int
    after_create: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the fault as a JSON-able dict (the shape ``POST /_simulator/faults`` takes)."""
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "times": self.times,
            "after_create": self.after_create,
            **self.options,
        }


def _number(name: str, value: Any, *, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KlingSimulatorError(f"{name} must be a number, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum:g} to {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise KlingSimulatorError(f"{name} must be {bound}, not {value!r}")
    return value


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KlingSimulatorError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise KlingSimulatorError(f"{name} must be at least {minimum}, not {value!r}")
    return value


def _check_option(kind: str, name: str, value: Any) -> Any:
    """Validate one fault option (they also arrive as JSON from other processes)."""
    if name == "retry_after":
        if isinstance(value, str):  # sent verbatim: an HTTP date, or garbage a client must survive
            if not value.isascii() or not value.isprintable() or len(value) > 100:
                raise KlingSimulatorError(f"retry_after text must be printable ASCII, not {value!r}")
            return value
        return None if value is None else _number(name, value, minimum=0)
    if name == "seconds":
        return _number(name, value, minimum=0, maximum=_MAX_DELAY_SECONDS)
    if name == "code":
        if value is not None and not isinstance(value, str):
            raise KlingSimulatorError(f"code must be a string or null, not {value!r}")
        return value
    if name == "message":
        if not isinstance(value, str):
            raise KlingSimulatorError(f"message must be a string, not {value!r}")
        return value
    if name == "delay":
        return _number(name, value, minimum=0, maximum=_MAX_DELAY_SECONDS)
    if name == "status":
        allowed = _SERVER_ERROR_STATUSES if kind == "server_error" else frozenset(range(500, 600))
        if isinstance(value, bool) or value not in allowed:
            raise KlingSimulatorError(
                f"status of a {kind} fault must be one of {sorted(allowed)}, not {value!r}"
            )
        return value
    raise AssertionError(name)  # pragma: no cover - the spec table lists only the names above


def make_fault(
    endpoint: str, kind: str, *, times: int = 1, after_create: bool = False, **options: Any
) -> Fault:
    """
    Validate a fault description and return it with its defaults filled in.

    :param endpoint: ``submit``, ``status`` or ``result``.
    :param kind: see :meth:`KlingSimulator.inject_fault`.
    :param times: how many requests it applies to (at least 1).
    :param after_create: only on ``submit``: create the task first, then fail.
    :param options: the kind's options.
    :raises KlingSimulatorError: on an unknown endpoint, kind or option, or an invalid value.
    """
    if endpoint not in _ENDPOINTS:
        raise KlingSimulatorError(f"endpoint must be one of {sorted(_ENDPOINTS)}, not {endpoint!r}")
    if kind not in _FAULT_SPECS:
        raise KlingSimulatorError(f"kind must be one of {sorted(_FAULT_SPECS)}, not {kind!r}")
    endpoints, defaults = _FAULT_SPECS[kind]
    if endpoint not in endpoints:
        raise KlingSimulatorError(f"A {kind} fault applies to {sorted(endpoints)}, not to {endpoint!r}")
    _integer("times", times, minimum=1)
    if not isinstance(after_create, bool):
        raise KlingSimulatorError(f"after_create must be a boolean, not {after_create!r}")
    if after_create and endpoint != "submit":
        raise KlingSimulatorError("after_create applies to submit faults only")
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise KlingSimulatorError(f"Unknown option(s) {unknown} for a {kind} fault (allowed: {allowed})")
    checked = {name: _check_option(kind, name, value) for name, value in options.items()}
    return Fault(endpoint, kind, times, after_create, {**defaults, **checked})


@dataclass(frozen=True)
class SimulatedTask:
    """
    A snapshot of one simulated task.

    :param task_id: the API's task id.
    :param external_task_id: the request's ``parameters.external_task_id``, if any.
    :param status: ``Pending``, ``Running``, ``Success`` or ``Failure`` at the time of the snapshot.
    :param submit_time: Unix seconds (simulator clock).
    :param finish_time: Unix seconds, once the task has finished.
    :param urls: the result URLs, once the task has succeeded.
    :param error_message: the error message, once the task has failed.
    :param usage_seconds: the billed video seconds (``usage.duration``).
    :param aspect_ratio: the aspect ratio of the result video.
    :param request: the submit body as received.
    """

    task_id: str
    external_task_id: str | None
    status: str
    submit_time: int
    finish_time: int | None
    urls: tuple[str, ...]
    error_message: str | None
    usage_seconds: int
    aspect_ratio: str
    request: Mapping[str, Any]


@dataclass
class _Task:
    task_id: str
    owner: int
    external_task_id: str | None
    body: dict[str, Any]
    created_at: float
    seconds: float
    aspect_ratio: str
    usage_seconds: int
    results: int
    result_ttl_seconds: float
    result_size_bytes: int | None
    error_message: str | None

    @property
    def finish_at(self) -> float:
        return self.created_at + self.seconds

    def status_at(self, now: float) -> TaskStatus:
        elapsed = now - self.created_at
        if elapsed >= self.seconds:
            return TaskStatus.FAILURE if self.error_message is not None else TaskStatus.SUCCESS
        if elapsed < self.seconds / 5:
            return TaskStatus.PENDING
        return TaskStatus.RUNNING

    def urls(self, base_url: str) -> list[str]:
        return [f"{base_url}/results/{self.task_id}/{index}.mp4" for index in range(1, self.results + 1)]


@dataclass(frozen=True)
class _Settings:
    task_seconds: float
    results_per_task: int
    result_ttl_seconds: float
    result_size_bytes: int | None
    max_active_tasks: int | None = None

    def replace(self, **changes: Any) -> _Settings:
        values = self.as_dict()
        unknown = sorted(set(changes) - set(values))
        if unknown:
            raise KlingSimulatorError(f"Unknown setting(s) {unknown} (known: {', '.join(values)})")
        values.update(changes)
        return _Settings.checked(**values)

    @classmethod
    def checked(
        cls,
        *,
        task_seconds: Any,
        results_per_task: Any,
        result_ttl_seconds: Any,
        result_size_bytes: Any,
        max_active_tasks: Any = None,
    ) -> _Settings:
        _number("task_seconds", task_seconds, minimum=0)
        _integer("results_per_task", results_per_task, minimum=1)
        _number("result_ttl_seconds", result_ttl_seconds, minimum=0)
        if result_size_bytes is not None:
            _integer("result_size_bytes", result_size_bytes, minimum=_smallest_padded_size())
        if max_active_tasks is not None:
            _integer("max_active_tasks", max_active_tasks, minimum=1)
        return cls(
            float(task_seconds),
            results_per_task,
            float(result_ttl_seconds),
            result_size_bytes,
            max_active_tasks,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_seconds": self.task_seconds,
            "results_per_task": self.results_per_task,
            "result_ttl_seconds": self.result_ttl_seconds,
            "result_size_bytes": self.result_size_bytes,
            "max_active_tasks": self.max_active_tasks,
        }


@dataclass(frozen=True)
class _Reply:
    status: int
    payload: Any
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, message: str, *, type_: str, code: str | None, param: str | None = None) -> _Reply:
    return _Reply(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _rate_limit_reply(
    message: str = _FAULT_SPECS["rate_limit"][1]["message"],
    *,
    code: str | None = _FAULT_SPECS["rate_limit"][1]["code"],
    retry_after: float | str | None = _FAULT_SPECS["rate_limit"][1]["retry_after"],
) -> _Reply:
    """A 429 with an optional ``Retry-After``: a ``rate_limit`` fault, or a submit beyond capacity."""
    reply = _error(HTTPStatus.TOO_MANY_REQUESTS, message, type_="rate_limit_error", code=code)
    if retry_after is None:
        headers: tuple[tuple[str, str], ...] = ()
    else:
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        headers = (("Retry-After", value),)
    return _Reply(reply.status, reply.payload, headers)


def _validation_message(error: pydantic.ValidationError) -> tuple[str, str | None]:
    """
    Join a validation error's messages, and name the field if there is exactly one.

    The model's rule messages (``R11 parameters.multi_prompt: ...``) already name their field and go out
    as they are; any other message is prefixed with the field's path.
    """
    messages = []
    locations = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        for prefix in _PYDANTIC_PREFIXES:
            message = message.removeprefix(prefix)
        location = ".".join(str(part) for part in item["loc"])
        if location:
            locations.append(location)
        if location and not re.search(rf"(?:^|\s){re.escape(location)}:", message):
            message = f"{location}: {message}"
        messages.append(message)
    return "; ".join(messages), (locations[0] if len(locations) == 1 else None)


def _unreadable_input(body: Mapping[str, Any]) -> str | None:
    """
    Name the first input URL the API could not fetch (``s3://``), if any.

    The provider's models accept ``s3://`` inputs because the submit operator resolves them to HTTPS URLs
    before sending; a client that forgets to is refused here, as the vendor cannot read a private bucket.
    """
    parameters = body.get("parameters")
    if not isinstance(parameters, dict):
        return None
    for list_name, key in (("image_list", "image_url"), ("video_list", "video_url")):
        items = parameters.get(list_name)
        for position, item in enumerate(items if isinstance(items, list) else ()):
            url = item.get(key) if isinstance(item, dict) else None
            if isinstance(url, str) and url[:5].lower() == "s3://":
                return (
                    f"parameters.{list_name}[{position}].{key}: the API cannot read s3:// URLs; send an "
                    "https:// URL (e.g. a pre-signed one) or base64"
                )
    return None


def _usage_seconds(request: KlingVideoRequest) -> int:
    duration = request.effective_duration  # None for an edit: the input video's length
    return EDIT_USAGE_SECONDS if duration is None else duration


class _State:
    """Everything the simulator knows; every method takes the lock."""

    def __init__(self, api_keys: Sequence[str], settings: _Settings) -> None:
        self._keys = [key.encode() for key in api_keys]
        self._initial = settings
        self._lock = threading.Lock()
        self.base_url = ""
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.settings = self._initial
        self._tasks: dict[str, _Task] = {}
        self._external_ids: dict[tuple[int, str], str] = {}
        self._submitted: list[dict[str, Any]] = []
        self._faults: dict[str, deque[Fault]] = {endpoint: deque() for endpoint in _ENDPOINTS}
        self._failures: deque[str] = deque()
        self._offset = 0.0
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.faults_fired: Counter[str] = Counter()
        # (finish time, task id) of the tasks that may still be Pending or Running: a heap, pruned lazily.
        self._active: list[tuple[float, str]] = []
        self.active_tasks_peak = 0
        self.capacity_refusals = 0
        self.bytes_served = 0
        self.connections_total = 0
        self.connections_max_open = 0
        self.connections_open = 0

    def reset(self) -> None:
        with self._lock:
            open_now = self.connections_open
            self._reset_locked()
            self.connections_open = open_now
            self.connections_max_open = open_now

    # Clock and settings -----------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        _number("seconds", seconds, minimum=0)
        with self._lock:
            self._offset += seconds
            return self._offset

    def configure(self, **changes: Any) -> _Settings:
        with self._lock:
            self.settings = self.settings.replace(**changes)
            return self.settings

    # Counters -----------------------------------------------------------------------------------

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def count_response(self, status: int) -> None:
        with self._lock:
            self.responses[status] += 1

    def count_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_served += count

    def connection_opened(self) -> None:
        with self._lock:
            self.connections_total += 1
            self.connections_open += 1
            self.connections_max_open = max(self.connections_max_open, self.connections_open)

    def connection_closed(self) -> None:
        with self._lock:
            self.connections_open -= 1

    # Faults -------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults[fault.endpoint].append(fault)

    def take_fault(self, endpoint: str) -> Fault | None:
        """Return the next fault for an endpoint (using up one of its ``times``), if any."""
        with self._lock:
            queue = self._faults[endpoint]
            if not queue:
                return None
            fault = queue[0]
            if fault.times <= 1:
                queue.popleft()
            else:
                queue[0] = Fault(
                    fault.endpoint, fault.kind, fault.times - 1, fault.after_create, fault.options
                )
            self.faults_fired[f"{endpoint}:{fault.kind}"] += 1
            return fault

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [fault for endpoint in sorted(self._faults) for fault in self._faults[endpoint]]

    def clear_faults(self) -> int:
        with self._lock:
            count = sum(len(queue) for queue in self._faults.values())
            for queue in self._faults.values():
                queue.clear()
            return count

    def fail_next(self, n: int, message: str) -> None:
        _integer("n", n, minimum=1)
        if not isinstance(message, str) or not message:
            raise KlingSimulatorError("message must be a non-empty string")
        with self._lock:
            self._failures.extend([message] * n)

    # The API ------------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> int | _Reply:
        """Return the index of the key the ``Authorization`` header carries, or a 401 reply."""
        if not header:
            message = "Missing API key: send it in the Authorization header"
        elif header.lower().startswith("bearer "):
            message = "Invalid Authorization header: send the bare API key, without a 'Bearer ' prefix"
        else:
            presented = header.encode("utf-8", "surrogateescape")
            for index, key in enumerate(self._keys):
                if hmac.compare_digest(presented, key):
                    return index
            message = "Invalid API key"
        return _error(HTTPStatus.UNAUTHORIZED, message, type_="authentication_error", code="invalid_api_key")

    def submit(self, owner: int, raw: bytes, request_id: str) -> tuple[_Reply, str | None]:
        """Validate and create a task; return the reply and the new task's id (``None`` if refused)."""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return self._creation_error(f"The request body is not valid JSON: {error}"), None
        if not isinstance(body, dict):
            return self._creation_error("The request body must be a JSON object"), None
        try:
            # The API ignores such fields silently; a warning here would fire in a server thread, where
            # pytest pins it on whichever test is running.
            with ignored_field_warnings_suppressed():
                request = KlingVideoRequest.model_validate(body)
        except pydantic.ValidationError as error:
            message, param = _validation_message(error)
            return self._creation_error(message, param=param), None
        unreadable = _unreadable_input(body)
        if unreadable is not None:
            return self._creation_error(unreadable), None
        parameters = request.parameters
        external_id = parameters.external_task_id
        aspect_ratio = parameters.aspect_ratio.value if parameters.aspect_ratio else DEFAULT_ASPECT_RATIO
        with self._lock:
            if external_id is not None and (owner, external_id) in self._external_ids:
                return (
                    self._creation_error(
                        f"parameters.external_task_id: {external_id!r} is already used by another task; "
                        "it must be unique per user",
                        param="parameters.external_task_id",
                    ),
                    None,
                )
            settings = self.settings
            active = self._active_count_locked()
            if settings.max_active_tasks is not None and active >= settings.max_active_tasks:
                self.capacity_refusals += 1
                log.info("Refused a submit: %s of %s tasks active", active, settings.max_active_tasks)
                return _rate_limit_reply(), None
            task = _Task(
                task_id=uuid.uuid4().hex,
                owner=owner,
                external_task_id=external_id,
                body=body,
                created_at=self.now(),
                seconds=settings.task_seconds,
                aspect_ratio=aspect_ratio,
                usage_seconds=_usage_seconds(request),
                results=settings.results_per_task,
                result_ttl_seconds=settings.result_ttl_seconds,
                result_size_bytes=settings.result_size_bytes,
                error_message=self._failures.popleft() if self._failures else None,
            )
            self._tasks[task.task_id] = task
            if not task.status_at(task.created_at).is_terminal:
                heapq.heappush(self._active, (task.finish_at, task.task_id))
                self.active_tasks_peak = max(self.active_tasks_peak, len(self._active))
            if external_id is not None:
                self._external_ids[(owner, external_id)] = task.task_id
            self._submitted.append(body)
        log.info("Created simulated task %s (%s s, %s)", task.task_id, task.seconds, aspect_ratio)
        return _Reply(
            HTTPStatus.OK, {"output": {"task_id": task.task_id}, "request_id": request_id}
        ), task.task_id

    def _active_count_locked(self) -> int:
        """How many tasks are Pending or Running now, by the simulator's clock."""
        now = self.now()
        while self._active and self._tasks[self._active[0][1]].status_at(now).is_terminal:
            heapq.heappop(self._active)
        return len(self._active)

    @staticmethod
    def _creation_error(message: str, *, param: str | None = None) -> _Reply:
        return _error(
            HTTPStatus.BAD_REQUEST,
            message,
            type_="invalid_request_error",
            code=VENDOR_CODE_TASK_CREATION_ERROR,
            param=param,
        )

    def status(self, owner: int, query: Mapping[str, list[str]], request_id: str) -> _Reply:
        task_ids = query.get("task_id") or [""]
        if not task_ids[0]:
            return _error(
                HTTPStatus.BAD_REQUEST,
                "task_id is required",
                type_="invalid_request_error",
                code="missing_task_id",
                param="task_id",
            )
        with self._lock:
            task = self._tasks.get(task_ids[0])
            if task is None or task.owner != owner:
                return _error(
                    HTTPStatus.NOT_FOUND,
                    f"Task {task_ids[0]!r} not found",
                    type_="not_found_error",
                    code="task_not_found",
                    param="task_id",
                )
            return _Reply(HTTPStatus.OK, self._status_body(task, request_id))

    def _status_body(self, task: _Task, request_id: str) -> dict[str, Any]:
        status = task.status_at(self.now())
        output: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status.value,
            "submit_time": int(task.created_at),
        }
        body: dict[str, Any] = {"output": output}
        if status.is_terminal:
            output["finish_time"] = int(task.finish_at)
            if status is TaskStatus.SUCCESS:
                output["urls"] = task.urls(self.base_url)
            else:
                output["error_message"] = task.error_message
            body["usage"] = {"duration": task.usage_seconds}
        body["request_id"] = request_id
        return body

    def result(self, task_id: str, index: int) -> tuple[ResultBody, str, float] | _Reply:
        """Return a result's body, ``ETag`` and finish time, or a 404/403 reply."""
        with self._lock:
            task = self._tasks.get(task_id)
            now = self.now()
            if task is None or task.status_at(now) is not TaskStatus.SUCCESS or index > task.results:
                return _s3_error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
            if now > task.finish_at + task.result_ttl_seconds:
                return _expired_reply()
        body = ResultBody(result_video(task.aspect_ratio), task.result_size_bytes)
        return body, f'"{task_id}-{index}-{body.size}"', task.finish_at

    # Introspection --------------------------------------------------------------------------------

    def snapshot(self, task: _Task) -> SimulatedTask:
        status = task.status_at(self.now())
        return SimulatedTask(
            task_id=task.task_id,
            external_task_id=task.external_task_id,
            status=status.value,
            submit_time=int(task.created_at),
            finish_time=int(task.finish_at) if status.is_terminal else None,
            urls=tuple(task.urls(self.base_url)) if status is TaskStatus.SUCCESS else (),
            error_message=task.error_message if status is TaskStatus.FAILURE else None,
            usage_seconds=task.usage_seconds,
            aspect_ratio=task.aspect_ratio,
            request=json.loads(json.dumps(task.body)),
        )

    def tasks(self, external_task_id: str | None = None) -> list[SimulatedTask]:
        with self._lock:
            return [
                self.snapshot(task)
                for task in self._tasks.values()
                if external_task_id is None or task.external_task_id == external_task_id
            ]

    def task(self, task_id: str) -> SimulatedTask:
        with self._lock:
            return self.snapshot(self._tasks[task_id])

    def task_bodies(self, external_task_id: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                self._status_body(task, "")
                for task in self._tasks.values()
                if external_task_id is None or task.external_task_id == external_task_id
            ]

    def submitted(self) -> list[dict[str, Any]]:
        with self._lock:
            copy: list[dict[str, Any]] = json.loads(json.dumps(self._submitted))
            return copy

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "responses": {str(status): count for status, count in sorted(self.responses.items())},
                "tasks": len(self._tasks),
                "submitted": len(self._submitted),
                "faults_fired": dict(self.faults_fired),
                "faults_pending": sum(len(queue) for queue in self._faults.values()),
                "active_tasks": self._active_count_locked(),
                "active_tasks_peak": self.active_tasks_peak,
                "capacity_refusals": self.capacity_refusals,
                "failures_pending": len(self._failures),
                "connections": {
                    "total": self.connections_total,
                    "open": self.connections_open,
                    "max_open": self.connections_max_open,
                },
                "bytes_served": self.bytes_served,
                "clock_offset_seconds": self._offset,
                "settings": self.settings.as_dict(),
            }


def _s3_error(status: int, code: str, message: str) -> _Reply:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    )
    return _Reply(status, xml.encode(), (("Content-Type", "application/xml"),))


def _expired_reply() -> _Reply:
    return _s3_error(HTTPStatus.FORBIDDEN, "AccessDenied", "Request has expired")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """
    Parse a single ``Range: bytes=...`` header.

    :return: ``(start, stop)``, ``None`` to serve the whole body (no header, a malformed or multi-range
        header: RFC 9110 allows ignoring it), or ``False`` if the range is unsatisfiable (416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match["start"], match["end"]
    if not first:
        if not last:
            return None
        suffix = int(last)
        return (max(size - suffix, 0), size) if suffix > 0 and size > 0 else False
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    return start, (min(int(last) + 1, size) if last else size)


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------

_HTML_ERROR_PAGE: Final = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_MALFORMED_JSON: Final = b'{"output": {"task_id": "'
#: The ``Host`` headers the admin API answers: loopback names only (no DNS rebinding).
_LOOPBACK_HOST: Final = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?", re.IGNORECASE)
#: Admin requests that must carry ``Content-Type: application/json`` even with an empty body.
_BODY_METHODS: Final = frozenset({"POST", "PUT"})


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so that :meth:`close_connections` can end them."""

    daemon_threads = True
    # Connections are tracked and joined by close_connections(), with a bound.
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: _State, stopping: threading.Event) -> None:
        self.state = state
        self.stopping = stopping
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host's FQDN, a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        self.state.connection_opened()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.state.connection_closed()
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # The client went away (reset, broken pipe): not our fault.
            log.debug("Connection from %s ended: %r", client_address, error)
        else:
            log.error("Error while handling a request from %s", client_address, exc_info=error)

    def close_connections(self, timeout: float) -> None:
        """Shut down every open connection and wait (at most ``timeout`` seconds) for its thread."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(deadline - time.monotonic(), 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlingSimulator/1.0"
    # Idle keep-alive connections are closed after this many seconds without a request.
    timeout = 300
    disable_nagle_algorithm = True
    server: _Server

    # http.server API ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.state.count_response(code)
        super().send_response(code, message)

    # Routing ----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        state = self.server.state
        self.request_id = uuid.uuid4().hex
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        body = self._read_body()
        if body is None:
            return
        if path == SUBMIT_PATH:
            state.count_request("submit")
            if self._allow("POST"):
                self._api("submit", query, body)
        elif path == STATUS_PATH:
            state.count_request("status")
            if self._allow("GET"):
                self._api("status", query, body)
        elif path.startswith("/results/"):
            state.count_request("result")
            if self._allow("GET", "HEAD"):
                self._result(path)
        elif path.startswith("/_simulator/"):
            state.count_request("admin")
            self._admin(path.removeprefix("/_simulator/").rstrip("/"), query, body)
        else:
            state.count_request("other")
            self._reply(
                _error(HTTPStatus.NOT_FOUND, f"No route for {path}", type_="not_found_error", code=None)
            )

    def _allow(self, *methods: str) -> bool:
        if self.command in methods:
            return True
        self._reply(
            _Reply(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {
                    "error": {
                        "message": f"Method {self.command} not allowed",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                (("Allow", ", ".join(methods)),),
            )
        )
        return False

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply_and_close(HTTPStatus.LENGTH_REQUIRED, "Chunked request bodies are not supported")
            return None
        header = self.headers.get("Content-Length")
        if not header:
            return b""
        try:
            length = int(header)
            if length < 0:
                raise ValueError(header)
        except ValueError:
            self._reply_and_close(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
            return None
        if length > _MAX_BODY_BYTES:
            self._reply_and_close(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
            return None
        return self.rfile.read(length)

    # The API ----------------------------------------------------------------------------------

    def _api(self, endpoint: Endpoint, query: Mapping[str, list[str]], body: bytes) -> None:
        state = self.server.state
        fault = state.take_fault(endpoint)
        if fault is not None and not fault.after_create and self._fire(fault):
            return
        owner = state.authenticate(self.headers.get("Authorization"))
        if isinstance(owner, _Reply):
            self._reply(owner)
            return
        if endpoint == "submit":
            reply, created = state.submit(owner, body, self.request_id)
            if fault is not None and fault.after_create and created is not None and self._fire(fault):
                return
        else:
            reply = state.status(owner, query, self.request_id)
        self._reply(reply)

    def _fire(self, fault: Fault) -> bool:
        """Act out a fault; return whether the request is answered (``False``: carry on, after a delay)."""
        options = fault.options
        log.info("Injecting a %s fault on %s", fault.kind, fault.endpoint)
        if fault.kind == "slow":
            if self.server.stopping.wait(options["delay"]):
                self._reset_connection()
                return True
            return False
        if fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "rate_limit":
            self._reply(
                _rate_limit_reply(
                    options["message"], code=options["code"], retry_after=options["retry_after"]
                )
            )
        elif fault.kind == "server_error":
            self._reply(
                _error(options["status"], options["message"], type_="server_error", code=options["code"])
            )
        elif fault.kind == "html_error":
            status = HTTPStatus(options["status"])
            page = _HTML_ERROR_PAGE.format(status=status.value, phrase=status.phrase).encode()
            self._send(status, page, "text/html")
        elif fault.kind == "malformed_json":
            self._send(HTTPStatus.OK, _MALFORMED_JSON, "application/json")
        elif fault.kind == "expired":
            self._reply(_expired_reply())
        elif fault.kind == "endless":
            self._send_endless(options["seconds"])
        else:  # "truncate" and "gzip" are acted out by _result, which has the video.
            return False
        return True

    def _send_endless(self, seconds: float) -> None:
        """A ``200 video/mp4`` whose body never ends (no length): zeros until the client leaves."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Connection", "close")
        self.send_header("X-Request-Id", self.request_id)
        self.end_headers()
        self.close_connection = True
        ends = time.monotonic() + seconds
        sent = 0
        try:
            while time.monotonic() < ends and not self.server.stopping.is_set():
                self.wfile.write(_ZEROS)
                sent += len(_ZEROS)
        except OSError:
            pass  # the client hung up: what a client that caps the size does
        finally:
            self.server.state.count_bytes(sent)

    def _reset_connection(self) -> None:
        """Close the socket at once with a TCP reset, answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _result(self, path: str) -> None:
        state = self.server.state
        fault = state.take_fault("result")
        if fault is not None and self._fire(fault):
            return
        match = _RESULT_PATH.match(path)
        found = state.result(match["task_id"], int(match["index"])) if match else None
        if found is None:
            self._reply(_s3_error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist."))
            return
        if isinstance(found, _Reply):
            self._reply(found)
            return
        body, etag, finished = found
        headers = [
            ("Accept-Ranges", "bytes"),
            ("ETag", etag),
            ("Last-Modified", formatdate(finished, usegmt=True)),
        ]
        if_range = self.headers.get("If-Range")
        byte_range = _parse_range(self.headers.get("Range"), body.size) if if_range in (None, etag) else None
        if byte_range is False:
            headers.append(("Content-Range", f"bytes */{body.size}"))
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain", headers)
            return
        status = HTTPStatus.OK
        start, stop = 0, body.size
        if byte_range is not None:
            status = HTTPStatus.PARTIAL_CONTENT
            start, stop = byte_range
            headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{body.size}"))
        if fault is not None and fault.kind == "gzip":
            # Content-Encoding: gzip over the whole file (Range then counts the coded bytes: not served).
            coded = gzip.compress(b"".join(bytes(chunk) for chunk in body.iter_range(0, body.size)))
            self._send(HTTPStatus.OK, coded, "video/mp4", [*headers[:1], ("Content-Encoding", "gzip")])
            return
        truncate = fault is not None and fault.kind == "truncate"
        self._send_headers(status, "video/mp4", stop - start, headers)
        if self.command == "HEAD":
            return
        limit = start + (stop - start) // 2 if truncate else stop
        sent = 0
        try:
            for chunk in body.iter_range(start, limit):
                if self.server.stopping.is_set():
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            state.count_bytes(sent)
        if truncate:
            # Content-Length promised more: closing now leaves the client a short body.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    # The admin API ------------------------------------------------------------------------------

    def _admin(self, route: str, query: Mapping[str, list[str]], body: bytes) -> None:
        state = self.server.state
        refusal = self._admin_refusal(body)
        if refusal is not None:
            self._reply(refusal)
            return
        try:
            payload = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._reply(
                _error(
                    HTTPStatus.BAD_REQUEST, f"Invalid JSON: {error}", type_="invalid_request_error", code=None
                )
            )
            return
        if not isinstance(payload, dict):
            self._reply(
                _error(
                    HTTPStatus.BAD_REQUEST, "Expected a JSON object", type_="invalid_request_error", code=None
                )
            )
            return
        try:
            reply = self._admin_route(state, route, query, payload)
        except (KlingSimulatorError, TypeError) as error:
            reply = _error(HTTPStatus.BAD_REQUEST, str(error), type_="invalid_request_error", code=None)
        self._reply(reply)

    def _admin_refusal(self, body: bytes) -> _Reply | None:
        """
        Refuse an admin request a web page could have sent: a foreign ``Host`` or a non-JSON body.

        A page on any site can make a browser send a "simple" cross-site request (``text/plain``, a form)
        without asking first, and a page on a rebound DNS name reaches 127.0.0.1 with its own name in
        ``Host``. Requiring a loopback ``Host`` and ``application/json`` (which a cross-site page can only
        send after a CORS preflight, which the simulator never grants) stops both.
        """
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or _LOOPBACK_HOST.fullmatch(hosts[0].strip()) is None:
            shown = ", ".join(repr(host[:100]) for host in hosts) or "none"
            return _error(
                HTTPStatus.FORBIDDEN,
                "The simulator's admin API answers only requests addressed to a loopback host "
                f"(127.0.0.1, localhost or [::1], with an optional port); Host: {shown}",
                type_="permission_error",
                code=None,
            )
        if self.command in _BODY_METHODS or body:
            media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                return _error(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "The simulator's admin API takes application/json bodies only (send {} for no "
                    f"options); Content-Type: {self.headers.get('Content-Type', 'none')[:100]!r}",
                    type_="invalid_request_error",
                    code=None,
                )
        return None

    def _admin_route(
        self, state: _State, route: str, query: Mapping[str, list[str]], payload: dict[str, Any]
    ) -> _Reply:
        method = self.command
        if route == "faults" and method == "POST":
            fault = make_fault(**payload)
            state.add_fault(fault)
            return _Reply(HTTPStatus.CREATED, {"fault": fault.as_dict()})
        if route == "faults" and method == "GET":
            return _Reply(HTTPStatus.OK, {"faults": [fault.as_dict() for fault in state.pending_faults()]})
        if route == "faults" and method == "DELETE":
            return _Reply(HTTPStatus.OK, {"cleared": state.clear_faults()})
        if route == "fail-next-tasks" and method == "POST":
            state.fail_next(payload.get("n", 1), payload.get("message", DEFAULT_FAILURE_MESSAGE))
            return _Reply(HTTPStatus.OK, {"failures_pending": state.stats()["failures_pending"]})
        if route == "reset" and method == "POST":
            state.reset()
            return _Reply(HTTPStatus.OK, {"reset": True})
        if route == "stats" and method == "GET":
            return _Reply(HTTPStatus.OK, state.stats())
        if route == "submitted" and method == "GET":
            return _Reply(HTTPStatus.OK, {"submitted": state.submitted()})
        if route == "tasks" and method == "GET":
            external = query.get("external_task_id", [None])[0]
            return _Reply(HTTPStatus.OK, {"tasks": state.task_bodies(external)})
        if route == "config" and method == "GET":
            return _Reply(HTTPStatus.OK, state.settings.as_dict())
        if route == "config" and method == "POST":
            return _Reply(HTTPStatus.OK, state.configure(**payload).as_dict())
        if route == "advance" and method == "POST":
            return _Reply(HTTPStatus.OK, {"clock_offset_seconds": state.advance(payload.get("seconds", 0))})
        return _error(
            HTTPStatus.NOT_FOUND,
            f"No simulator route {method} /_simulator/{route}",
            type_="not_found_error",
            code=None,
        )

    # Writing ----------------------------------------------------------------------------------

    def _reply(self, reply: _Reply) -> None:
        headers = list(reply.headers)
        content_type = next((value for name, value in headers if name == "Content-Type"), None)
        headers = [(name, value) for name, value in headers if name != "Content-Type"]
        if isinstance(reply.payload, bytes):
            self._send(reply.status, reply.payload, content_type or "application/octet-stream", headers)
        else:
            data = json.dumps(reply.payload, ensure_ascii=False).encode()
            self._send(reply.status, data, content_type or "application/json", headers)

    def _reply_and_close(self, status: int, message: str) -> None:
        self.close_connection = True
        reply = _error(status, message, type_="invalid_request_error", code=None)
        self._reply(_Reply(reply.status, reply.payload, (("Connection", "close"),)))

    def _send_headers(
        self, status: int, content_type: str, length: int, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", self.request_id)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_headers(status, content_type, len(data), headers)
        if self.command != "HEAD":
            self.wfile.write(data)
            self.server.state.count_bytes(len(data))


# --------------------------------------------------------------------------------------------------
# The public API
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run ``kling-simulator``: print the base URL, then serve until Ctrl-C or SIGTERM.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="kling-simulator",
        description="A local stand-in for the ModelVerse task API (Kling V3 Omni), for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_CLI_PORT, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help="the key the API accepts (default: sim-key)"
    )
    parser.add_argument(
        "--task-seconds", type=float, default=5.0, help="task duration (default: %(default)s)"
    )
    parser.add_argument("--results-per-task", type=int, default=1, help="result URLs per task (default: 1)")
    parser.add_argument(
        "--result-ttl-seconds",
        type=float,
        default=DEFAULT_RESULT_TTL_SECONDS,
        help="result URL lifetime (default: %(default)s)",
    )
    parser.add_argument("--result-size-bytes", type=int, default=None, help="pad results to this size")
    parser.add_argument(
        "--max-active-tasks",
        type=int,
        default=None,
        help="refuse submits (429, 006001094) while this many tasks are active (default: no limit)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not _is_loopback(args.host):
        log.warning("Binding %s: the /_simulator/ admin API has no authentication", args.host)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        simulator = KlingSimulator(
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            task_seconds=args.task_seconds,
            results_per_task=args.results_per_task,
            result_ttl_seconds=args.result_ttl_seconds,
            result_size_bytes=args.result_size_bytes,
            max_active_tasks=args.max_active_tasks,
        )
    except KlingSimulatorError as error:
        parser.error(str(error))
    with simulator:
        print(simulator.base_url, flush=True)
        log.info("Serving %s; stop with Ctrl-C", simulator)
        while not stop.wait(0.5):
            pass
    return 0
