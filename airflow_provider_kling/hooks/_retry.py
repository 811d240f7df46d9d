"""
The retry policy of every API call, in one place, shared by the sync and the async hook methods.

Pure decisions (:func:`decide`, :meth:`RetryPolicy.delay`, :meth:`RetryPolicy.next_delay`) and nothing
else: the hook's two thin loops (one sleeps with ``time.sleep``, one awaits ``asyncio.sleep``) ask them
what to do after each failure.

A submit is special: every task is billed, so it is retried only where the server provably created
nothing (429, vendor code 006001094, a connection that was never opened). After any ambiguous failure it
raises :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError` and never retries.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_kling.constants import RETRYABLE_STATUS_CODES
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTransportError,
)

if TYPE_CHECKING:
    from collections.abc import Callable


class Decision(enum.Enum):
    """What to do after a failed call."""

    #: Try again after a delay (if the retry budget allows).
    RETRY = "retry"
    #: Raise the error as it is: retrying cannot help.
    RAISE = "raise"
    #: A submit failed ambiguously: raise :class:`KlingSubmitUncertainError`, never retry.
    UNCERTAIN = "uncertain"


def decide(error: KlingError, *, submit: bool) -> Decision:
    """
    Decide whether a failed call may be retried.

    Retried: 408/409/429/5xx, vendor codes 006001094/006001095, a malformed 2xx body and transport
    errors. Never retried: 400/401/403/404/422, vendor code 006001099, any other status. For a submit,
    only 429/006001094 and transport errors with ``sent=False`` are retried; every other retryable
    failure is ambiguous (the server may have created the task) and gives :attr:`Decision.UNCERTAIN`.

    :param error: the error the call raised.
    :param submit: whether the call was a submit.
    """
    if isinstance(error, KlingTransportError):
        if not error.sent:
            return Decision.RETRY
        return Decision.UNCERTAIN if submit else Decision.RETRY
    if isinstance(error, KlingRateLimitError):
        return Decision.RETRY
    if isinstance(error, KlingBadRequestError | KlingAuthError | KlingNotFoundError | KlingTaskCreationError):
        return Decision.RAISE
    if isinstance(error, KlingServerError) or (
        isinstance(error, KlingAPIError) and error.status_code in RETRYABLE_STATUS_CODES
    ):
        return Decision.UNCERTAIN if submit else Decision.RETRY
    return Decision.RAISE


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """
    Backoff and budget of the retries: exponential backoff with full jitter, ``Retry-After`` honoured.

    :param base_delay: the first backoff ceiling, in seconds; it doubles with every retry.
    :param max_delay: the largest backoff ceiling, in seconds.
    :param max_retry_after: the longest ``Retry-After`` honoured, in seconds (longer values are capped).
    :param jitter: a source of floats in ``[0, 1)`` for the jitter (injectable for tests).
    """

    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    jitter: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def delay(self, retry_number: int, error: KlingError) -> float:
        """
        Return the seconds to wait before retry number ``retry_number`` (0 for the first retry).

        A ``Retry-After`` the server sent wins (capped at :attr:`max_retry_after`); otherwise full jitter:
        a uniform draw from ``[0, min(max_delay, base_delay * 2 ** retry_number))``.

        :param retry_number: how many retries were made already.
        :param error: the error that is being retried.
        """
        if isinstance(error, KlingAPIError) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry_number, 32))
        return self.jitter() * ceiling

    def next_delay(
        self,
        error: KlingError,
        *,
        retry_number: int,
        max_retries: int,
        submit: bool,
        external_task_id: str | None = None,
        time_left: float | None = None,
    ) -> float:
        """
        Return the delay before the next try, or raise when there must be no next try.

        :param error: the error the call raised.
        :param retry_number: how many retries were made already.
        :param max_retries: the retry budget of the call.
        :param submit: whether the call was a submit.
        :param external_task_id: the submit request's ``external_task_id``, for the uncertain error.
        :param time_left: seconds left before the caller's deadline, if it has one: a retry that would
            sleep past it is not made.
        :raises KlingSubmitUncertainError: a submit failed ambiguously.
        :raises KlingError: ``error`` itself, when it is not retryable or the budget is spent.
        """
        decision = decide(error, submit=submit)
        if decision is Decision.UNCERTAIN:
            raise KlingSubmitUncertainError(
                f"The Kling submit failed ambiguously ({error}).", external_task_id=external_task_id
            ) from error
        if decision is Decision.RAISE or retry_number >= max_retries:
            raise error
        delay = self.delay(retry_number, error)
        if time_left is not None and delay >= time_left:
            raise error
        return delay
