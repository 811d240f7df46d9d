"""The simulator's state: tasks, the clock, settings, capacity (admission), pending faults and counters."""

from __future__ import annotations

import heapq
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import pydantic

from airflow_provider_kling.constants import VENDOR_CODE_TASK_CREATION_ERROR
from airflow_provider_kling.models import (
    DEFAULT_DURATION,
    KlingVideoRequest,
    TaskStatus,
    ignored_field_warnings_suppressed,
)
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError, _integer, _number
from airflow_provider_kling.testing.simulator.faults import _ENDPOINTS, Fault
from airflow_provider_kling.testing.simulator.media import ResultBody, _smallest_padded_size, result_video
from airflow_provider_kling.testing.simulator.replies import (
    _error,
    _expired_reply,
    _rate_limit_reply,
    _Reply,
    _s3_error,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

#: ``usage.duration`` of a video edit (``refer_type: base``), whose real length is the input video's: the
#: simulator does not download it and bills the API's default duration.
EDIT_USAGE_SECONDS: Final = DEFAULT_DURATION
#: The aspect ratio of the result of an edit, which may leave ``aspect_ratio`` out (R4).
DEFAULT_ASPECT_RATIO: Final = "16:9"
#: The default ``error_message`` of a task made to fail by :meth:`KlingSimulator.fail_next_tasks`.
DEFAULT_FAILURE_MESSAGE: Final = "Simulated failure: the video could not be generated"
_PYDANTIC_PREFIXES: Final = ("Value error, ", "Assertion failed, ")


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
