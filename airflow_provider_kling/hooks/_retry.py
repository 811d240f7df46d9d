"""
Retrying an API call, in one place, shared by the sync and the async hook methods.

Pure decisions (:func:`decide`, :meth:`RetryPolicy.delay`, :meth:`RetryPolicy.next_delay`), and the two
thin loops of :class:`RetriedCall` that apply them (one sleeps with ``time.sleep``, one awaits
``asyncio.sleep``), asking after each failure what to do.

A submit is special: every task is billed, so it is retried only where the server provably created
nothing (429, vendor code 006001094, a connection that was never opened). After any ambiguous failure it
raises :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError` and never retries.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow_provider_kling.constants import (
    RETRYABLE_STATUS_CODES,
    VENDOR_CODE_RESOURCES_INSUFFICIENT,
    VENDOR_CODE_TASK_CREATION_ERROR,
)
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
    from collections.abc import Awaitable, Callable

_T = TypeVar("_T")


#: Statuses that prove a submit created nothing: the API refused the request or the key.
_NOTHING_CREATED_STATUSES: Final = frozenset({400, 401, 403, 422})


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

    A status query (``submit=False``) is retried on 408/409/429/5xx, vendor codes 006001094/006001095, a
    malformed 2xx body and transport errors; never on 400/401/403/404/422, vendor code 006001099 or any
    other status.

    A submit is billed, so only proof that no task was created counts: a request that never left
    (``sent=False``) and 429 / vendor code 006001094 are retried; vendor code 006001099 and 400/422/401/403
    are raised. Everything else after the request may have been sent (a 5xx, a timeout, a reset, an error
    inside a 2xx, an unreadable body, an unexpected status) gives :attr:`Decision.UNCERTAIN`.

    :param error: the error the call raised.
    :param submit: whether the call was a submit.
    """
    if submit:
        return _decide_submit(error)
    if isinstance(error, KlingTransportError | KlingRateLimitError):
        return Decision.RETRY
    if isinstance(error, KlingBadRequestError | KlingAuthError | KlingNotFoundError | KlingTaskCreationError):
        return Decision.RAISE
    if isinstance(error, KlingServerError) or (
        isinstance(error, KlingAPIError) and error.status_code in RETRYABLE_STATUS_CODES
    ):
        return Decision.RETRY
    return Decision.RAISE


def _decide_submit(error: KlingError) -> Decision:
    if isinstance(error, KlingTransportError):
        return Decision.UNCERTAIN if error.sent else Decision.RETRY
    if not isinstance(error, KlingAPIError):
        return Decision.UNCERTAIN
    if error.vendor_code == VENDOR_CODE_RESOURCES_INSUFFICIENT or (
        error.status_code == 429 and isinstance(error, KlingRateLimitError)
    ):
        return Decision.RETRY
    if error.vendor_code == VENDOR_CODE_TASK_CREATION_ERROR or error.status_code in _NOTHING_CREATED_STATUSES:
        return Decision.RAISE
    return Decision.UNCERTAIN


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


@dataclass(frozen=True, slots=True)
class RetriedCall:
    """
    The retry loop of one API call: try, ask :attr:`policy` after each failure, sleep, try again.

    :param what: the operation, for the log lines.
    :param submit: whether the call is a submit (retried only where the server provably created nothing).
    :param max_retries: the retry budget of the call.
    :param deadline: the monotonic time the call must end by, if any (each try is given it).
    :param policy: the backoff and budget.
    :param monotonic: the clock ``deadline`` is on.
    :param log: where each retry, and a submit that failed ambiguously, is logged.
    :param external_task_id: the submit request's ``external_task_id``, for the uncertain error.
    """

    what: str
    submit: bool
    max_retries: int
    deadline: float | None
    policy: RetryPolicy
    monotonic: Callable[[], float]
    log: Any
    external_task_id: str | None = None

    def run(self, attempt: Callable[[float | None], _T], sleep: Callable[[float], None]) -> _T:
        """
        Return what ``attempt`` returns, retrying it (after ``sleep``) as long as the policy allows.

        :param attempt: one try, given the deadline.
        :param sleep: how to wait between two tries.
        """
        retry_number = 0
        while True:
            try:
                return attempt(self.deadline)
            except KlingError as error:
                delay = self.next_delay(error, retry_number)
            sleep(delay)
            retry_number += 1

    async def arun(
        self,
        attempt: Callable[[float | None], Awaitable[_T]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> _T:
        """
        Return what ``attempt`` returns, retrying it (after awaiting ``sleep``) as long as the policy allows.

        :param attempt: one try, given the deadline.
        :param sleep: how to wait between two tries without blocking the loop.
        """
        retry_number = 0
        while True:
            try:
                return await attempt(self.deadline)
            except KlingError as error:
                delay = self.next_delay(error, retry_number)
            await sleep(delay)
            retry_number += 1

    def next_delay(self, error: KlingError, retry_number: int) -> float:
        """
        Log and return the delay before the next try, or raise when there must be no next try.

        :param error: the error the last try raised.
        :param retry_number: how many retries were made already.
        :raises KlingSubmitUncertainError: a submit failed ambiguously.
        :raises KlingError: ``error`` itself, when it is not retryable or the budget or time is spent.
        """
        time_left = None if self.deadline is None else self.deadline - self.monotonic()
        try:
            delay = self.policy.next_delay(
                error,
                retry_number=retry_number,
                max_retries=self.max_retries,
                submit=self.submit,
                external_task_id=self.external_task_id,
                time_left=time_left,
            )
        except KlingSubmitUncertainError:
            self.log.error(
                "Kling %s failed ambiguously; not retrying: a task may exist: %s", self.what, error
            )
            raise
        self.log.warning(
            "Kling %s failed (%s); retry %d of %d in %.2f s",
            self.what,
            error,
            retry_number + 1,
            self.max_retries,
            delay,
        )
        return delay
