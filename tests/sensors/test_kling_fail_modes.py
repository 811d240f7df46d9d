"""
``soft_fail``, ``never_fail``, ``silent_fail``: the deferrable path ends as poke mode does (issue 10, item 5).

Each case runs the same situation (a failed Kling task, a refused status query, a ``Success`` without a
video, a timeout) through a poke-mode sensor (``BaseSensorOperator.execute``, the reference) and through
the deferrable path twice: seen by the first poke on the worker, and seen by the trigger (its event,
through ``resume_execution`` as the task runner calls it). The outcomes must be the same: success,
skipped, failed without retries or failed with retries.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, TaskStatus
from airflow_provider_kling.sensors.kling import KlingTaskSensor

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context

    from airflow_provider_kling.testing import KlingSimulator

CONTEXT: Context = {}
SKIPPED = "skipped"
FAILED_NO_RETRY = "failed without retries"
FAILED = "failed (retries apply)"
DEFERRED = "deferred"

FLAGS = {
    "no flag": {},
    "soft_fail": {"soft_fail": True},
    "never_fail": {"never_fail": True},
    "silent_fail": {"silent_fail": True},
    "silent_fail+soft_fail": {"silent_fail": True, "soft_fail": True},
    "silent_fail+never_fail": {"silent_fail": True, "never_fail": True},
}
SITUATIONS = ["failed task", "refused query", "success without video", "timeout"]
EMPTY_SUCCESS = KlingTask(task_id="t-empty", status=TaskStatus.SUCCESS, urls=[])
TEXT_TO_VIDEO = {
    "model": "kling-v3-omni",
    "input": {"prompt": "a lighthouse"},
    "parameters": {"aspect_ratio": "16:9"},
}


def outcome(run: Callable[[], Any]) -> str:
    """What the task runner makes of ``run()``: the state it gives the task instance."""
    try:
        run()
    except TaskDeferred:
        return DEFERRED
    except AirflowSkipException:
        return SKIPPED
    except (AirflowSensorTimeout, AirflowFailException):
        return FAILED_NO_RETRY
    except Exception:
        return FAILED
    return "success"


def event_of(situation: str, task_id: str) -> dict[str, Any]:
    """The trigger's event for ``situation``."""
    base = {"status": "error", "kling_task_id": task_id, "last_status": "Running"}
    events: dict[str, dict[str, Any]] = {
        "failed task": {"status": "failure", "kling_task_id": task_id, "message": "moderation"},
        "refused query": {**base, "reason": "api_error", "message": "HTTP 401"},
        "success without video": {
            **base,
            "reason": "no_result",
            "message": "no video",
            "last_status": "Success",
        },
        "timeout": {**base, "reason": "timeout", "message": "did not finish", "timeout": 0.2},
    }
    return events[situation]


@pytest.fixture
def situation_task(
    request: pytest.FixtureRequest,
    kling_simulator: KlingSimulator,
    kling_connection: str,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Set up the situation named by the test's ``situation`` parameter; return the Kling task id."""
    situation = request.node.callspec.params["situation"]
    kling_simulator.task_seconds = 600 if situation == "timeout" else 0
    if situation == "failed task":
        kling_simulator.fail_next_tasks(1, message="moderation")
    with KlingHook() as hook:
        task_id = hook.submit_task(TEXT_TO_VIDEO)
    if situation == "refused query":
        conn = {"conn_type": "kling", "host": kling_simulator.base_url, "password": "sk-not-the-key-0000"}
        monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps(conn))
    if situation == "success without video":
        monkeypatch.setattr(KlingHook, "get_task", mock.Mock(return_value=EMPTY_SUCCESS))
    return task_id


def sensor(task_id: str, *, deferrable: bool, **flags: Any) -> KlingTaskSensor:
    return KlingTaskSensor(
        task_id="wait", kling_task_id=task_id, deferrable=deferrable, poke_interval=0.05, timeout=0.2, **flags
    )


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
@pytest.mark.parametrize("situation", SITUATIONS)
def test_the_deferrable_path_ends_as_poke_mode_does(
    situation: str, flags: dict[str, bool], situation_task: str
) -> None:
    poke_mode = outcome(lambda: sensor(situation_task, deferrable=False, **flags).execute(CONTEXT))

    deferrable = sensor(situation_task, deferrable=True, **flags)
    first_poke = outcome(lambda: deferrable.execute(CONTEXT))
    if first_poke == DEFERRED:  # the task still ran (or the error was logged): the trigger reports it
        first_poke = outcome(
            lambda: deferrable.resume_execution(
                "execute_complete", {"event": event_of(situation, situation_task)}, CONTEXT
            )
        )
    seen_by_trigger = outcome(
        lambda: sensor(situation_task, deferrable=True, **flags).resume_execution(
            "execute_complete", {"event": event_of(situation, situation_task)}, CONTEXT
        )
    )

    assert {"first poke": first_poke, "trigger": seen_by_trigger} == {
        "first poke": poke_mode,
        "trigger": poke_mode,
    }


# What poke mode does, pinned, so that the parity above cannot pass by both paths changing together.
EXPECTED = {
    ("failed task", "no flag"): FAILED,
    ("failed task", "soft_fail"): FAILED,  # soft_fail covers timeouts, not a poke's own errors
    ("failed task", "never_fail"): SKIPPED,
    ("failed task", "silent_fail"): FAILED_NO_RETRY,  # polled until the timeout
    ("failed task", "silent_fail+soft_fail"): SKIPPED,
    ("failed task", "silent_fail+never_fail"): FAILED_NO_RETRY,
    ("timeout", "no flag"): FAILED_NO_RETRY,
    ("timeout", "soft_fail"): SKIPPED,
    ("timeout", "never_fail"): FAILED_NO_RETRY,  # never_fail covers a poke's errors, not the timeout
    ("timeout", "silent_fail"): FAILED_NO_RETRY,
}


@pytest.mark.parametrize(("situation", "flag"), EXPECTED.keys(), ids=map(str, EXPECTED.keys()))
def test_the_deferrable_outcome_of_each_flag(situation: str, flag: str, situation_task: str) -> None:
    deferrable = sensor(situation_task, deferrable=True, **FLAGS[flag])

    result = outcome(
        lambda: deferrable.resume_execution(
            "execute_complete", {"event": event_of(situation, situation_task)}, CONTEXT
        )
    )

    assert result == EXPECTED[situation, flag]


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
def test_a_task_that_succeeds_is_untouched_by_the_flags(
    flags: dict[str, bool], kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 0
    with KlingHook() as hook:
        task_id = hook.submit_task(TEXT_TO_VIDEO)

    assert sensor(task_id, deferrable=True, **flags).execute(CONTEXT)["status"] == "Success"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({}, FAILED_NO_RETRY), ({"soft_fail": True}, SKIPPED), ({"never_fail": True}, FAILED_NO_RETRY)],
    ids=["no flag", "soft_fail", "never_fail"],
)
def test_airflows_backstop_timeout_of_the_deferral_ends_as_a_sensor_timeout(
    flags: dict[str, bool], expected: str
) -> None:
    deferred = sensor("t-1", deferrable=True, **flags)

    assert outcome(lambda: deferred.resume_execution("__fail__", {"error": "Trigger timeout"}, CONTEXT)) == (
        expected
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, FAILED),
        ({"soft_fail": True}, FAILED),
        ({"never_fail": True}, SKIPPED),
        ({"silent_fail": True}, FAILED_NO_RETRY),
    ],
    ids=["no flag", "soft_fail", "never_fail", "silent_fail"],
)
def test_a_failed_trigger_is_handled_as_a_poke_error(flags: dict[str, bool], expected: str) -> None:
    deferred = sensor("t-1", deferrable=True, **flags)

    assert outcome(lambda: deferred.resume_execution("__fail__", {"error": "Trigger failure"}, CONTEXT)) == (
        expected
    )


def test_silent_fail_logs_the_error_and_says_why_the_sensor_stops(capsys: pytest.CaptureFixture[str]) -> None:
    deferred = sensor("t-1", deferrable=True, silent_fail=True)

    with pytest.raises(AirflowSensorTimeout, match="silent_fail") as raised:
        deferred.execute_complete(CONTEXT, event_of("failed task", "t-1"))

    assert "t-1 failed: moderation" in str(raised.value)
    assert (
        "Sensor poke failed (silent_fail is set): Kling task t-1 failed: moderation"
        in capsys.readouterr().out
    )
