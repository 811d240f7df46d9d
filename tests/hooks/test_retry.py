from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingError,
    KlingNotFoundError,
    KlingRateLimitError,
    KlingResultExpiredError,
    KlingServerError,
    KlingSubmitUncertainError,
    KlingTaskCreationError,
    KlingTransportError,
)
from airflow_provider_kling.hooks._retry import Decision, RetryPolicy, decide

R, X, U = Decision.RETRY, Decision.RAISE, Decision.UNCERTAIN


def api(
    cls: type[KlingAPIError], status: int, code: str | None = None, retry_after: float | None = None
) -> KlingAPIError:
    return cls("failed", status_code=status, vendor_code=code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "status_call", "submit_call"),
    [
        pytest.param(api(KlingRateLimitError, 429), R, R, id="429"),
        pytest.param(api(KlingRateLimitError, 200, "006001094"), R, R, id="vendor-006001094"),
        pytest.param(KlingTransportError("refused", sent=False), R, R, id="connect-error"),
        pytest.param(KlingTransportError("read timeout", sent=True), R, U, id="read-timeout"),
        pytest.param(api(KlingServerError, 500), R, U, id="500"),
        pytest.param(api(KlingServerError, 502), R, U, id="502"),
        pytest.param(api(KlingServerError, 503), R, U, id="503"),
        pytest.param(api(KlingServerError, 504), R, U, id="504"),
        pytest.param(api(KlingServerError, 200, "006001095"), R, U, id="vendor-006001095"),
        pytest.param(api(KlingServerError, 200), R, U, id="malformed-2xx"),
        pytest.param(api(KlingAPIError, 408), R, U, id="408"),
        pytest.param(api(KlingAPIError, 409), R, U, id="409"),
        pytest.param(api(KlingBadRequestError, 400), X, X, id="400"),
        pytest.param(api(KlingBadRequestError, 422), X, X, id="422"),
        pytest.param(api(KlingAuthError, 401), X, X, id="401"),
        pytest.param(api(KlingAuthError, 403), X, X, id="403"),
        # A submit is billed: only an answer that proves no task was created is not uncertain (issue 9).
        pytest.param(api(KlingNotFoundError, 404), X, U, id="404"),
        pytest.param(api(KlingTaskCreationError, 400, "006001099"), X, X, id="vendor-006001099"),
        pytest.param(api(KlingTaskCreationError, 200, "006001099"), X, X, id="vendor-006001099-in-2xx"),
        pytest.param(api(KlingAPIError, 200, "500"), X, U, id="error-code-inside-2xx"),
        pytest.param(api(KlingAPIError, 200), X, U, id="error-object-inside-2xx"),
        pytest.param(api(KlingAPIError, 418), X, U, id="418"),
        pytest.param(api(KlingAPIError, 301), X, U, id="301"),
        pytest.param(KlingResultExpiredError("t", 403), X, U, id="expired"),
        pytest.param(KlingError("other"), X, U, id="other"),
    ],
)
def test_decide(error: KlingError, status_call: Decision, submit_call: Decision) -> None:
    assert decide(error, submit=False) is status_call
    assert decide(error, submit=True) is submit_call


def test_backoff_doubles_from_half_a_second_and_caps() -> None:
    policy = RetryPolicy(jitter=lambda: 1.0)
    error = api(KlingServerError, 503)
    assert [policy.delay(n, error) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_full_jitter_scales_the_ceiling() -> None:
    draws = iter([0.0, 0.25, 0.5])
    policy = RetryPolicy(jitter=lambda: next(draws))
    error = KlingTransportError("x", sent=False)
    assert [policy.delay(2, error) for _ in range(3)] == [0.0, 0.5, 1.0]


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(jitter=lambda: 0.0)
    assert policy.delay(0, api(KlingRateLimitError, 429, retry_after=7)) == 7
    assert policy.delay(4, api(KlingRateLimitError, 429, retry_after=0)) == 0
    assert policy.delay(0, api(KlingRateLimitError, 429, retry_after=3600)) == 60


def test_next_delay_budget() -> None:
    policy = RetryPolicy(jitter=lambda: 1.0)
    error = api(KlingServerError, 503)
    assert policy.next_delay(error, retry_number=1, max_retries=2, submit=False) == 1.0
    with pytest.raises(KlingServerError) as info:
        policy.next_delay(error, retry_number=2, max_retries=2, submit=False)
    assert info.value is error


def test_next_delay_zero_budget_raises_at_once() -> None:
    error = api(KlingRateLimitError, 429)
    with pytest.raises(KlingRateLimitError):
        RetryPolicy().next_delay(error, retry_number=0, max_retries=0, submit=True)


def test_next_delay_never_retries_an_ambiguous_submit() -> None:
    error = api(KlingServerError, 502)
    with pytest.raises(KlingSubmitUncertainError, match="ext-42") as info:
        RetryPolicy().next_delay(error, retry_number=0, max_retries=5, submit=True, external_task_id="ext-42")
    assert info.value.external_task_id == "ext-42"
    assert info.value.__cause__ is error


def test_next_delay_respects_time_left() -> None:
    policy = RetryPolicy(jitter=lambda: 1.0)
    error = api(KlingServerError, 503)
    assert policy.next_delay(error, retry_number=0, max_retries=5, submit=False, time_left=1.0) == 0.5
    with pytest.raises(KlingServerError):
        policy.next_delay(error, retry_number=0, max_retries=5, submit=False, time_left=0.4)


@given(
    retry_number=st.integers(min_value=0, max_value=10_000),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=1e9),
)
def test_delay_is_always_bounded(retry_number: int, draw: float, retry_after: float | None) -> None:
    policy = RetryPolicy(jitter=lambda: draw)
    delay = policy.delay(retry_number, api(KlingRateLimitError, 429, retry_after=retry_after))
    assert 0.0 <= delay <= (policy.max_retry_after if retry_after is not None else policy.max_delay)
