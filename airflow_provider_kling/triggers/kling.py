"""
The trigger that waits for a Kling task in the triggerer, without holding a worker slot.

:class:`KlingTaskTrigger` polls the task's status through :meth:`KlingHook.aget_task` and yields exactly
one :class:`~airflow.triggers.base.TriggerEvent`:

* ``{"status": "success", "kling_task_id", "urls", "usage_seconds", "submit_time", "finish_time"}``
* ``{"status": "failure", "kling_task_id", "message", "usage_seconds"}`` (``message``: the vendor's)
* ``{"status": "error", "kling_task_id", "reason": "timeout" | "api_error", "message", "last_status"}``

Its kwargs (stored in plain text in the metadata database) and its events (logged) hold ids, the conn id,
result URLs and numbers: never the API key, never the request.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.constants import DEFAULT_CONN_ID
from airflow_provider_kling.exceptions import KlingError, KlingTaskFailedError, KlingTaskTimeoutError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, TaskStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Default seconds between two status queries.
DEFAULT_POLL_INTERVAL: Final = 30.0
#: Default seconds a wait may take, from the moment it starts.
DEFAULT_WAIT_TIMEOUT: Final = 3600.0

#: ``status`` values of the events.
EVENT_SUCCESS: Final = "success"
EVENT_FAILURE: Final = "failure"
EVENT_ERROR: Final = "error"
#: ``reason`` values of an ``error`` event.
REASON_TIMEOUT: Final = "timeout"
REASON_API_ERROR: Final = "api_error"


def finished_task_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """
    Turn an event of :class:`KlingTaskTrigger` into the finished-task dict, or raise what it reports.

    The dict is the one :meth:`KlingTask.as_result` returns (``status`` is the API's ``Success``), so the
    deferrable and the worker-side paths of the operators return the same value.

    :param event: the event payload.
    :raises KlingTaskFailedError: the task failed (with the vendor's message).
    :raises KlingTaskTimeoutError: the wait timed out.
    :raises KlingError: the API refused the status query, or the event is not one of this trigger's.
    """
    kling_task_id = str(event.get("kling_task_id") or "")
    status = event.get("status")
    if status == EVENT_SUCCESS:
        return {
            "kling_task_id": kling_task_id,
            "status": TaskStatus.SUCCESS.value,
            "urls": list(event.get("urls") or []),
            "usage_seconds": event.get("usage_seconds"),
            "submit_time": event.get("submit_time"),
            "finish_time": event.get("finish_time"),
        }
    if status == EVENT_FAILURE:
        raise KlingTaskFailedError(kling_task_id, event.get("message"))
    if status == EVENT_ERROR and event.get("reason") == REASON_TIMEOUT:
        raise KlingTaskTimeoutError(
            kling_task_id, float(event.get("timeout") or 0.0), event.get("last_status") or None
        )
    if status == EVENT_ERROR:
        raise KlingError(f"Waiting for Kling task {kling_task_id} failed: {event.get('message')}")
    raise KlingError(f"Unexpected event from the Kling trigger: {event!r}")


class KlingTaskTrigger(BaseTrigger):
    """
    Wait for a Kling task to finish by polling its status, and fire one event.

    Thousands of these can run on one triggerer: each creates one :class:`KlingHook` per run (not per
    poll), and every hook shares one bounded HTTP connection pool per event loop (the hook also bounds the
    requests in flight on the loop). Transient API errors (rate limits, 5xx, network failures) are retried
    by the hook and then ridden out by polling again until ``timeout``
    (:meth:`KlingHook.is_retryable_error`); an auth, not-found or bad-request error ends the wait with an
    ``api_error``.

    The trigger enforces its own ``timeout`` (Airflow's defer timeout is not enforced under
    ``airflow dags test``) against a wall-clock ``deadline`` fixed when the trigger is first created, so a
    trigger that moves to another triggerer does not restart its clock.

    :param kling_task_id: the API's task id to wait for.
    :param kling_conn_id: the Airflow connection of the ModelVerse API.
    :param poll_interval: seconds between two status queries.
    :param timeout: seconds the whole wait may take.
    :param deadline: Unix time at which the wait ends; set by :meth:`serialize`, leave it out.
    """

    def __init__(
        self,
        *,
        kling_task_id: str,
        kling_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        deadline: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger is untyped
        if not kling_task_id:
            raise ValueError("kling_task_id must be a non-empty Kling task id")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout!r}")
        self.kling_task_id = kling_task_id
        self.kling_conn_id = kling_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else time.time() + self.timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs: ids, the conn id and numbers only."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kling_task_id": self.kling_task_id,
                "kling_conn_id": self.kling_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "deadline": self.deadline,
            },
        )

    def _hook(self) -> KlingHook:
        # Imported with this module, not here: the triggerer imports trigger classes on its event loop
        # once ("loading the trigger class could be expensive"), so run() itself never imports.
        return KlingHook(kling_conn_id=self.kling_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the task until it finishes, the wait times out or the API refuses; yield one event."""
        yield TriggerEvent(await self._wait())  # type: ignore[no-untyped-call]  # untyped in Airflow

    async def _wait(self) -> dict[str, Any]:
        hook = self._hook()
        loop = asyncio.get_running_loop()
        started = loop.time()
        ends = started + max(0.0, self.deadline - time.time())
        last_status: TaskStatus | None = None
        while True:
            try:
                task: KlingTask = await hook.aget_task(self.kling_task_id)
            except KlingError as error:
                if not KlingHook.is_retryable_error(error):
                    self.log.error("Kling task %s: status query refused: %s", self.kling_task_id, error)
                    return self._error(REASON_API_ERROR, str(error), last_status)
                self.log.warning(
                    "Kling task %s: status query failed (%s), polling again within the timeout",
                    self.kling_task_id,
                    error,
                )
            except Exception as error:  # an unexpected answer must still end in exactly one event
                self.log.exception("Kling task %s: status query failed unexpectedly", self.kling_task_id)
                return self._error(REASON_API_ERROR, f"{type(error).__name__}: {error}", last_status)
            else:
                if task.status != last_status:
                    self.log.info(
                        "Kling task %s is %s after %.1f s of waiting",
                        self.kling_task_id,
                        task.status.value,
                        loop.time() - started,
                    )
                    last_status = task.status
                if task.status == TaskStatus.SUCCESS:
                    return {"status": EVENT_SUCCESS, **_without_status(task.as_result())}
                if task.status == TaskStatus.FAILURE:
                    return {
                        "status": EVENT_FAILURE,
                        "kling_task_id": self.kling_task_id,
                        "message": task.error_message or "no error message given",
                        "usage_seconds": task.usage_seconds,
                    }
            remaining = ends - loop.time()
            if remaining <= 0:
                message = str(
                    KlingTaskTimeoutError(
                        self.kling_task_id, self.timeout, last_status.value if last_status else None
                    )
                )
                self.log.error("%s", message)
                return {**self._error(REASON_TIMEOUT, message, last_status), "timeout": self.timeout}
            await asyncio.sleep(min(self.poll_interval, remaining))

    def _error(self, reason: str, message: str, last_status: TaskStatus | None) -> dict[str, Any]:
        return {
            "status": EVENT_ERROR,
            "kling_task_id": self.kling_task_id,
            "reason": reason,
            "message": message,
            "last_status": last_status.value if last_status is not None else None,
        }


def _without_status(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "status"}
