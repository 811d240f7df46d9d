"""
The trigger that waits for a Kling task in the triggerer, without holding a worker slot.

:class:`KlingTaskTrigger` polls the task's status through :meth:`KlingHook.aget_task` and yields exactly
one :class:`~airflow.triggers.base.TriggerEvent`:

* ``{"status": "success", "kling_task_id", "urls", "usage_seconds", "submit_time", "finish_time"}``
* ``{"status": "failure", "kling_task_id", "message", "usage_seconds"}`` (``message``: the vendor's)
* ``{"status": "error", "kling_task_id", "reason": "timeout" | "api_error" | "no_result", "message",
  "last_status"}`` (``no_result``: the task reported ``Success`` without a result URL)

Its kwargs (stored in plain text in the metadata database) and its events (logged) hold ids, the conn id,
result URLs and numbers: never the API key, never the request.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, NoReturn

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.constants import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT
from airflow_provider_kling.exceptions import (
    KlingError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
    KlingTaskTimeoutError,
    KlingTransportError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, TaskStatus, check_kling_task_id
from airflow_provider_kling.waiting import check_poll_interval, check_wait_timeout, no_result_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.providers.common.compat.sdk import BaseOperator

# DEFAULT_POLL_INTERVAL and DEFAULT_WAIT_TIMEOUT live in ``constants``; kept importable from here.
__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_WAIT_TIMEOUT",
    "EVENT_ERROR",
    "EVENT_FAILURE",
    "EVENT_SUCCESS",
    "MAX_POLL_JITTER_SECONDS",
    "MIN_QUERY_SECONDS",
    "POLL_TICK_SECONDS",
    "QUERY_GRACE_SECONDS",
    "REASON_API_ERROR",
    "REASON_NO_RESULT",
    "REASON_TIMEOUT",
    "KlingTaskTrigger",
    "defer_to_trigger",
    "finished_task_from_event",
]

#: Seconds a status query may take at least, even when less of the wait is left (the last query, at the
#: deadline, and the first one of a trigger restarted after its deadline): the wait ends at most this
#: (plus :data:`QUERY_GRACE_SECONDS`) after its ``timeout``.
MIN_QUERY_SECONDS: Final = 1.0
#: Seconds the trigger gives the hook beyond the time it passed it, to end a query with its own error,
#: before the trigger cancels the query itself.
QUERY_GRACE_SECONDS: Final = 0.5

#: Largest shift of one poll from the poll interval, either way (and at most a tenth of the interval): it
#: keeps triggers created together from polling in lockstep without delaying an event by more than this.
MAX_POLL_JITTER_SECONDS: Final = 0.5
#: Polls start on a grid of this many seconds of the loop's clock: the triggers of one triggerer whose polls
#: fall in the same tick wake up together, in one turn of the event loop, instead of one turn each (at a few
#: hundred queries per second a lone poll costs four turns of the loop; see ``benchmarks/RESULTS.md``).
#: A trigger polling more often than every second uses a tenth of its interval instead.
POLL_TICK_SECONDS: Final = 0.1

#: ``status`` values of the events.
EVENT_SUCCESS: Final = "success"
EVENT_FAILURE: Final = "failure"
EVENT_ERROR: Final = "error"
#: ``reason`` values of an ``error`` event.
REASON_TIMEOUT: Final = "timeout"
REASON_API_ERROR: Final = "api_error"
REASON_NO_RESULT: Final = "no_result"


def finished_task_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """
    Turn an event of :class:`KlingTaskTrigger` into the finished-task dict, or raise what it reports.

    The dict is the one :meth:`KlingTask.as_result` returns (``status`` is the API's ``Success``), so the
    deferrable and the worker-side paths of the operators return the same value.

    :param event: the event payload.
    :raises KlingTaskFailedError: the task failed (with the vendor's message).
    :raises KlingTaskTimeoutError: the wait timed out.
    :raises KlingTaskNotReadyError: the task succeeded without result URLs (see
        :func:`~airflow_provider_kling.waiting.no_result_error` for why this is not a fail-without-retry).
    :raises KlingError: the API refused the status query, or the event is not one of this trigger's.
    """
    kling_task_id = str(event.get("kling_task_id") or "")
    status = event.get("status")
    if status == EVENT_SUCCESS and not event.get("urls"):
        raise no_result_error(kling_task_id)
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
    if status == EVENT_ERROR and event.get("reason") == REASON_NO_RESULT:
        raise KlingTaskNotReadyError(str(event.get("message") or no_result_error(kling_task_id)))
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
    trigger that moves to another triggerer does not restart its clock. No status query outlives it: the
    hook is told the time left (``aget_task(timeout=...)``, its retries and ``Retry-After`` waits included),
    and the trigger cancels a query that overruns that by :data:`QUERY_GRACE_SECONDS`. Each query gets at
    least :data:`MIN_QUERY_SECONDS`, so the wait ends at most about 1.5 s after ``timeout``.

    A ``Success`` without a result URL ends the wait with a ``no_result`` error, where it is first seen.

    Polls are spread: the first query comes at a random point of the first ``poll_interval``
    (:func:`first_poll_delay`), and each later one ``poll_interval`` after the last, shifted by up to
    :data:`MAX_POLL_JITTER_SECONDS` either way (:func:`next_poll_delay`). Ten thousand triggers created
    together so query the API evenly, not in bursts of ten thousand, and an event comes at most one
    interval plus 0.6 s after its task finished (plus the query's own time). Each poll starts on the next
    :data:`POLL_TICK_SECONDS` tick of the loop's clock (:func:`poll_start`), so that the polls of one
    triggerer falling in the same tick share one turn of its event loop.

    :param kling_task_id: the API's task id to wait for
        (:func:`~airflow_provider_kling.models.check_kling_task_id`).
    :param kling_conn_id: the Airflow connection of the ModelVerse API.
    :param poll_interval: seconds between two status queries: above 0, at most a day
        (:func:`~airflow_provider_kling.waiting.check_poll_interval`).
    :param timeout: seconds the whole wait may take: 0 to a week
        (:func:`~airflow_provider_kling.waiting.check_wait_timeout`).
    :param deadline: Unix time at which the wait ends; set by :meth:`serialize`, leave it out. It is held
        to at most ``timeout`` from now.
    :raises ValueError: an argument is unusable (a number that could never end the wait included).
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
        self.kling_task_id = check_kling_task_id(kling_task_id, field="kling_task_id")
        self.kling_conn_id = kling_conn_id
        self.poll_interval = check_poll_interval(poll_interval, "poll_interval")
        self.timeout = check_wait_timeout(timeout, "timeout")
        latest = time.time() + self.timeout
        if deadline is None:
            self.deadline = latest
        elif isinstance(deadline, int | float) and not isinstance(deadline, bool) and math.isfinite(deadline):
            self.deadline = min(float(deadline), latest)
        else:
            raise ValueError(f"deadline must be a finite Unix time, got {deadline!r}")

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
        tick = poll_tick(self.poll_interval)
        await _sleep_until(loop, poll_start(loop.time(), first_poll_delay(self.poll_interval), ends, tick))
        while True:
            try:
                task = await self._query(hook, max(ends - loop.time(), MIN_QUERY_SECONDS))
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
                if task.status == TaskStatus.SUCCESS and not task.urls:
                    message = str(no_result_error(self.kling_task_id))
                    self.log.error("%s", message)
                    return self._error(REASON_NO_RESULT, message, last_status)
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
            await _sleep_until(loop, poll_start(loop.time(), next_poll_delay(self.poll_interval), ends, tick))

    async def _query(self, hook: KlingHook, seconds: float) -> KlingTask:
        """
        Query the task's status once, in at most ``seconds`` (plus a grace), whatever the hook does.

        :param hook: the hook to query with.
        :param seconds: how long the query may take, the hook's retries included.
        :raises KlingTransportError: the query overran its time and was cancelled (retryable).
        """
        scope = asyncio.timeout(seconds + QUERY_GRACE_SECONDS)
        try:
            async with scope:
                return await hook.aget_task(self.kling_task_id, timeout=seconds)
        except TimeoutError as error:
            if not scope.expired():
                raise  # the hook's own TimeoutError: unexpected, not this deadline's
            raise KlingTransportError(
                f"The status query of Kling task {self.kling_task_id} took longer than "
                f"{seconds + QUERY_GRACE_SECONDS:.1f} s and was cancelled",
                sent=True,
            ) from error

    def _error(self, reason: str, message: str, last_status: TaskStatus | None) -> dict[str, Any]:
        return {
            "status": EVENT_ERROR,
            "kling_task_id": self.kling_task_id,
            "reason": reason,
            "message": message,
            "last_status": last_status.value if last_status is not None else None,
        }


def first_poll_delay(poll_interval: float) -> float:
    """
    Seconds before a trigger's first status query: a random point of the first poll interval.

    :param poll_interval: the trigger's poll interval.
    """
    return random.uniform(0.0, poll_interval)


def next_poll_delay(poll_interval: float) -> float:
    """
    Seconds between two status queries: the interval, shifted at random either way.

    The shift is at most a tenth of the interval, and at most :data:`MAX_POLL_JITTER_SECONDS`.

    :param poll_interval: the trigger's poll interval.
    """
    jitter = min(0.1 * poll_interval, MAX_POLL_JITTER_SECONDS)
    return poll_interval + random.uniform(-jitter, jitter)


def poll_tick(poll_interval: float) -> float:
    """
    Seconds between two ticks of a trigger's poll grid.

    :data:`POLL_TICK_SECONDS`, or a tenth of a ``poll_interval`` shorter than a second.

    :param poll_interval: the trigger's poll interval.
    """
    return min(POLL_TICK_SECONDS, poll_interval / 10)


def poll_start(now: float, delay: float, ends: float, tick: float = POLL_TICK_SECONDS) -> float:
    """
    Loop time of the next poll: ``delay`` from ``now``, on the next ``tick``.

    Never later than ``ends`` (the wait's deadline, which is not moved to a tick).

    :param now: the loop's time.
    :param delay: seconds until the poll is due (:func:`first_poll_delay`, :func:`next_poll_delay`).
    :param ends: the loop time at which the wait ends.
    :param tick: the grid (:func:`poll_tick`).
    """
    return min(math.ceil((now + delay) / tick) * tick, ends)


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    await asyncio.sleep(max(0.0, when - loop.time()))


def _without_status(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "status"}


def defer_to_trigger(
    task: BaseOperator,
    *,
    kling_task_id: str,
    kling_conn_id: str,
    poll_interval: float,
    timeout: float,
    method_name: str = "execute_complete",
) -> NoReturn:
    """
    Hand a task's wait for a Kling task to :class:`KlingTaskTrigger` (what the operator and the sensor do).

    Logs the wait, then defers ``task`` to ``method_name``. Airflow's own defer timeout is set a little past
    ``timeout`` as a backstop only: the trigger ends the wait itself, with a clearer event, at ``timeout``.

    :param task: the deferring operator or sensor.
    :param kling_task_id: the API's task id.
    :param kling_conn_id: the Airflow connection of the ModelVerse API.
    :param poll_interval: seconds between two status queries.
    :param timeout: seconds the wait may take.
    :param method_name: the method the task resumes in.
    """
    task.log.info(
        "Waiting for Kling task %s in the triggerer: a status query every %g s, for up to %g s",
        kling_task_id,
        poll_interval,
        timeout,
    )
    task.defer(
        trigger=KlingTaskTrigger(
            kling_task_id=kling_task_id,
            kling_conn_id=kling_conn_id,
            poll_interval=poll_interval,
            timeout=timeout,
        ),
        method_name=method_name,
        timeout=timedelta(seconds=timeout + max(60.0, 2 * poll_interval)),
    )
