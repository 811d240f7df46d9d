"""
The arguments of a wait for a Kling task, checked once for every waiter, and the error of an empty success.

The trigger, the sensor, the submit operator and :meth:`KlingHook.wait_for_task` all wait the same way: a
status query every ``poll_interval`` seconds until the task finishes or ``timeout`` seconds have passed.
Their arguments are checked here, when the waiter is created (for an operator or a sensor: when the DAG is
parsed), so that a number that could never end a wait fails at once with a message naming the argument:

* ``nan`` compares false with everything, so a ``nan`` interval sleeps forever and a ``nan`` timeout never
  expires; ``inf`` cannot become the ``timedelta`` of a deferral, and would crash only after the paid
  submit, again on every retry;
* a poll interval is above 0 (0 would spin) and at most :data:`~airflow_provider_kling.constants.
  MAX_POLL_INTERVAL` (a day, the life of a result URL);
* a timeout is 0 (one status query, no waiting) or more, and at most
  :data:`~airflow_provider_kling.constants.MAX_WAIT_TIMEOUT` (a week, Airflow's default sensor timeout).

Seconds are given as an ``int``, a ``float`` or a :class:`~datetime.timedelta`; ``bool`` (an ``int`` to
Python) and strings are refused.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk.types import Logger

from airflow_provider_kling.constants import MAX_POLL_INTERVAL, MAX_WAIT_TIMEOUT, RESULT_URL_TTL_HOURS
from airflow_provider_kling.exceptions import KlingTaskNotReadyError

__all__ = ["check_poll_interval", "check_wait_timeout", "log_finished_task", "no_result_error", "wait_budget"]


def check_poll_interval(value: object, name: str = "poll_interval") -> float:
    """
    Return a poll interval in seconds: a finite number above 0 and at most a day.

    :param value: seconds (``int`` or ``float``) or a :class:`~datetime.timedelta`.
    :param name: the argument's name, for the error message (a sensor's is ``poke_interval``).
    :raises ValueError: the value is not such a number.
    """
    seconds = _seconds(value)
    if seconds is None or not 0 < seconds <= MAX_POLL_INTERVAL:
        raise ValueError(
            f"{name} must be a finite number of seconds (or a timedelta) above 0 and at most "
            f"{MAX_POLL_INTERVAL:g} s (a day), got {_show(value)}"
        )
    return seconds


def check_wait_timeout(value: object, name: str = "timeout") -> float:
    """
    Return a wait's timeout in seconds: a finite number from 0 (query once, do not wait) to a week.

    :param value: seconds (``int`` or ``float``) or a :class:`~datetime.timedelta`.
    :param name: the argument's name, for the error message.
    :raises ValueError: the value is not such a number.
    """
    seconds = _seconds(value)
    if seconds is None or not 0 <= seconds <= MAX_WAIT_TIMEOUT:
        raise ValueError(
            f"{name} must be a finite number of seconds (or a timedelta) from 0 to at most "
            f"{MAX_WAIT_TIMEOUT:g} s (a week), got {_show(value)}"
        )
    return seconds


def no_result_error(kling_task_id: str) -> KlingTaskNotReadyError:
    """
    Return the error of a task that reported ``Success`` with no result URL (raise it where it is seen).

    It is a plain :class:`~airflow_provider_kling.exceptions.KlingTaskNotReadyError`, not an
    ``AirflowFailException``: the task is finished and billed, so nothing submits it again (the submit
    operator's retry reattaches to it through its ledger, a sensor's retry queries it again), and an empty
    ``urls`` may be a passing glitch of the vendor, which a retry's fresh status query then gets past. A
    retry therefore costs nothing and may help; with no retries the task fails at once, clearly.

    :param kling_task_id: the API's task id.
    """
    return KlingTaskNotReadyError(
        f"Kling task {kling_task_id} succeeded without result URLs: there is no video to use. The task is "
        "finished and billed, so it is not submitted again; a retry queries it again, or look it up in the "
        "vendor's console."
    )


def _seconds(value: object) -> float | None:
    """Return ``value`` in seconds, or ``None`` if it is not a finite number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def wait_budget(timeout: float, execution_timeout: timedelta | None, started: float) -> float:
    """
    Return how long a wait starting now may take: ``timeout``, cut to what is left of ``execution_timeout``.

    Airflow does not enforce ``execution_timeout`` while a task is deferred, so a deferring waiter hands its
    trigger only what is left of it: the try then ends on time, and its retry can pick the task up again.

    :param timeout: the waiter's own timeout, in seconds.
    :param execution_timeout: the task's ``execution_timeout``, if any.
    :param started: ``time.monotonic()`` when the try's ``execute`` began.
    """
    if execution_timeout is None:
        return timeout
    left = execution_timeout.total_seconds() - (time.monotonic() - started)
    return max(0.0, min(timeout, left))


def log_finished_task(log: Logger | Any, result: Mapping[str, Any]) -> None:
    """
    Log a finished task's success: its id, how long it took, its videos and billed seconds.

    Warns when its result URLs have expired already (they last about a day): copy them at once.

    :param log: the operator's or sensor's logger.
    :param result: the finished-task dict (:meth:`KlingTask.as_result`).
    """
    from airflow_provider_kling.links.kling import result_url_is_valid

    submit_time, finish_time = result.get("submit_time"), result.get("finish_time")
    took = f" in {finish_time - submit_time:g} s" if submit_time and finish_time else ""
    log.info(
        "Kling task %s succeeded%s: %d video(s), %s s billed",
        result["kling_task_id"],
        took,
        len(result.get("urls") or []),
        result.get("usage_seconds"),
    )
    if not result_url_is_valid(dict(result)):
        log.warning(
            "The result URLs of Kling task %s have expired (they last about %d hours)",
            result["kling_task_id"],
            RESULT_URL_TTL_HOURS,
        )
