"""The checks of a wait's arguments and the error of a task that succeeded without a result."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_kling import constants
from airflow_provider_kling.exceptions import KlingError, KlingTaskNotReadyError
from airflow_provider_kling.waiting import check_poll_interval, check_wait_timeout, no_result_error

DAY = 86400.0
WEEK = 7 * DAY


def test_the_defaults_and_limits_live_in_constants() -> None:
    assert constants.DEFAULT_POLL_INTERVAL == 30.0
    assert constants.DEFAULT_WAIT_TIMEOUT == 3600.0
    assert constants.MAX_POLL_INTERVAL == DAY
    assert constants.MAX_WAIT_TIMEOUT == WEEK
    assert check_poll_interval(constants.DEFAULT_POLL_INTERVAL) == 30.0
    assert check_wait_timeout(constants.DEFAULT_WAIT_TIMEOUT) == 3600.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1, 1.0), (0.05, 0.05), (timedelta(minutes=2), 120.0), (DAY, DAY), (timedelta(days=1), DAY)],
)
def test_poll_interval_accepts_seconds_and_timedeltas_up_to_a_day(value: Any, seconds: float) -> None:
    result = check_poll_interval(value)

    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (0.1, 0.1), (timedelta(hours=2), 7200.0), (WEEK, WEEK), (timedelta(days=7), WEEK)],
)
def test_wait_timeout_accepts_zero_up_to_a_week(value: Any, seconds: float) -> None:
    result = check_wait_timeout(value)

    assert result == seconds
    assert type(result) is float


NOT_A_NUMBER = [True, False, None, "30", b"30", [30], 10**400]


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        0,
        0.0,
        -1,
        -0.5,
        timedelta(0),
        timedelta(seconds=-1),
        DAY + 1,
        timedelta(days=2),
        *NOT_A_NUMBER,
    ],
)
def test_poll_interval_refuses_what_could_never_end_a_wait(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^poke_interval must be") as raised:
        check_poll_interval(value, "poke_interval")

    assert not isinstance(raised.value, KlingError)


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        -1,
        -0.001,
        timedelta(seconds=-1),
        WEEK + 1,
        timedelta(days=8),
        *NOT_A_NUMBER,
    ],
)
def test_wait_timeout_refuses_what_could_never_end_a_wait(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be"):
        check_wait_timeout(value)


def test_the_messages_name_the_argument_the_limit_and_the_value() -> None:
    with pytest.raises(ValueError, match=r"poll_interval .* at most 86400 s .* got nan"):
        check_poll_interval(math.nan)
    with pytest.raises(ValueError, match=r"wait_timeout .* at most 604800 s .* got inf"):
        check_wait_timeout(math.inf, "wait_timeout")


def test_no_result_error_names_the_task_and_says_it_is_billed_and_not_resubmitted() -> None:
    error = no_result_error("task-9")

    assert isinstance(error, KlingTaskNotReadyError)
    assert "Kling task task-9 succeeded without result URLs" in str(error)
    assert "billed" in str(error)
