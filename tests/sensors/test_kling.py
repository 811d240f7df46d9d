"""KlingTaskSensor: deferrable by default, poke mode, the finished-task dict, failures, timeouts."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links.kling import KlingTaskStatusLink, KlingVideoLink
from airflow_provider_kling.models import KlingTask, TaskStatus
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.triggers.kling import KlingTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_kling.testing import KlingSimulator

TEXT_TO_VIDEO = {
    "model": "kling-v3-omni",
    "input": {"prompt": "a lighthouse"},
    "parameters": {"aspect_ratio": "16:9"},
}
CONTEXT: Context = {}  # the sensor reads nothing from its context in deferrable and poke modes


def submit(count: int = 1) -> list[str]:
    with KlingHook() as hook:
        return [hook.submit_task(TEXT_TO_VIDEO) for _ in range(count)]


def success_event(task_id: str = "t-1", **overrides: Any) -> dict[str, Any]:
    return {
        "status": "success",
        "kling_task_id": task_id,
        "urls": ["https://cdn.example/t-1.mp4"],
        "usage_seconds": 5,
        "submit_time": 1756959000,
        "finish_time": 1756959050,
        **overrides,
    }


def test_defers_to_the_trigger_with_its_poke_interval_and_timeout(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 600
    [task_id] = submit()
    sensor = KlingTaskSensor(task_id="wait", kling_task_id=task_id, poke_interval=7, timeout=900)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(CONTEXT)

    trigger = deferred.value.trigger
    assert isinstance(trigger, KlingTaskTrigger)
    assert (trigger.kling_task_id, trigger.kling_conn_id) == (task_id, "kling_default")
    assert (trigger.poll_interval, trigger.timeout) == (7.0, 900.0)
    assert deferred.value.method_name == "execute_complete"
    # Airflow's own defer timeout is only a backstop behind the trigger's.
    assert deferred.value.timeout > timedelta(seconds=900)
    assert kling_simulator.requests["status"] == 1


def test_a_finished_task_returns_at_once_without_deferring(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 0
    [task_id] = submit()
    sensor = KlingTaskSensor(task_id="wait", kling_task_id=task_id)

    result = sensor.execute(CONTEXT)

    assert result["kling_task_id"] == task_id
    assert result["status"] == "Success"
    assert result["urls"] == list(kling_simulator.get_task(task_id).urls)


def test_a_failed_task_fails_the_sensor_with_the_vendor_message_before_deferring(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 0
    kling_simulator.fail_next_tasks(1, message="the prompt was refused")
    [task_id] = submit()

    with pytest.raises(KlingTaskFailedError, match="the prompt was refused"):
        KlingTaskSensor(task_id="wait", kling_task_id=task_id).execute(CONTEXT)


def test_execute_complete_returns_the_finished_task_dict() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")

    result = sensor.execute_complete(CONTEXT, success_event())

    assert result == {
        "kling_task_id": "t-1",
        "status": "Success",
        "urls": ["https://cdn.example/t-1.mp4"],
        "usage_seconds": 5,
        "submit_time": 1756959000,
        "finish_time": 1756959050,
    }
    assert sensor.kling_result == result


def test_execute_complete_failure_raises_the_vendor_message() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")

    with pytest.raises(KlingTaskFailedError, match="t-1 failed: moderation"):
        sensor.execute_complete(
            CONTEXT, {"status": "failure", "kling_task_id": "t-1", "message": "moderation"}
        )


TIMEOUT_EVENT = {
    "status": "error",
    "kling_task_id": "t-1",
    "reason": "timeout",
    "message": "did not finish",
    "timeout": 60.0,
    "last_status": "Running",
}


def test_a_timeout_event_raises_airflow_sensor_timeout() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")

    with pytest.raises(AirflowSensorTimeout, match="did not finish within 60 s"):
        sensor.resume_execution("execute_complete", {"event": TIMEOUT_EVENT}, CONTEXT)


def test_soft_fail_turns_a_timeout_into_a_skip() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1", soft_fail=True)

    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": TIMEOUT_EVENT}, CONTEXT)


def test_soft_fail_does_not_hide_a_failed_task() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1", soft_fail=True)
    event = {"status": "failure", "kling_task_id": "t-1", "message": "moderation"}

    with pytest.raises(KlingTaskFailedError):
        sensor.resume_execution("execute_complete", {"event": event}, CONTEXT)


def test_an_api_error_event_fails_the_sensor() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")
    event = {"status": "error", "kling_task_id": "t-1", "reason": "api_error", "message": "HTTP 401"}

    with pytest.raises(KlingError, match="HTTP 401"):
        sensor.execute_complete(CONTEXT, event)


def test_poke_mode_waits_on_the_worker_and_returns_the_finished_task(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    [task_id] = submit()
    sensor = KlingTaskSensor(task_id="wait", kling_task_id=task_id, deferrable=False, poke_interval=0.05)

    result = sensor.execute(CONTEXT)

    assert result["status"] == "Success"
    assert result["kling_task_id"] == task_id
    assert kling_simulator.requests["status"] >= 2  # Pending or Running first, then Success


def test_poke_mode_timeout_raises_or_skips_with_soft_fail(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 600
    [task_id] = submit()

    with pytest.raises(AirflowSensorTimeout):
        KlingTaskSensor(
            task_id="wait", kling_task_id=task_id, deferrable=False, poke_interval=0.05, timeout=0.2
        ).execute(CONTEXT)
    with pytest.raises(AirflowSkipException):
        KlingTaskSensor(
            task_id="wait",
            kling_task_id=task_id,
            deferrable=False,
            poke_interval=0.05,
            timeout=0.2,
            soft_fail=True,
        ).execute(CONTEXT)


def test_poke_rides_out_a_transient_error_but_not_an_auth_error(
    kling_simulator: KlingSimulator, kling_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kling_simulator.task_seconds = 0
    [task_id] = submit()
    conn = {"conn_type": "kling", "host": kling_simulator.base_url, "password": kling_simulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps({**conn, "extra": {"max_retries": 0}}))
    kling_simulator.inject_fault("status", "server_error", status=503)
    sensor = KlingTaskSensor(task_id="wait", kling_task_id=task_id, deferrable=False, poke_interval=0.05)

    with sensor.hook:  # poke() alone leaves the hook open: execute() closes it
        assert not sensor.poke(CONTEXT)
        done = sensor.poke(CONTEXT)
        assert done.xcom_value is not None
        assert done.xcom_value["status"] == "Success"

    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps({**conn, "password": "sk-not-the-key-0000"}))
    refused = KlingTaskSensor(task_id="wait", kling_task_id=task_id, deferrable=False)
    with refused.hook, pytest.raises(KlingAuthError):
        refused.poke(CONTEXT)


class FakeTaskInstance:
    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms
        self.pulls: list[str] = []

    def xcom_pull(self, task_ids: str) -> Any:
        self.pulls.append(task_ids)
        return self.xcoms[task_ids]


def test_kling_task_id_is_templated() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="{{ ti.xcom_pull('submit') }}")
    ti = FakeTaskInstance({"submit": "task-from-xcom"})

    sensor.render_template_fields({"ti": ti})  # type: ignore[typeddict-item]

    assert sensor.kling_task_id == "task-from-xcom"
    assert ti.pulls == ["submit"]
    assert set(KlingTaskSensor.template_fields) == {"kling_task_id", "kling_conn_id"}


def test_links_show_the_video_and_the_status_page_after_success() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")
    ti_key = mock.Mock(dag_id="dag", run_id="manual__2026-01-01T00:00:00+00:00", task_id="wait", map_index=-1)
    assert KlingVideoLink().get_link(sensor, ti_key=ti_key) == ""

    sensor.execute_complete(CONTEXT, success_event(finish_time=None))

    assert KlingVideoLink().get_link(sensor, ti_key=ti_key) == "https://cdn.example/t-1.mp4"
    assert (
        KlingTaskStatusLink()
        .get_link(sensor, ti_key=ti_key)
        .endswith("/dags/dag/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/wait/xcom")
    )
    assert {link.name for link in KlingTaskSensor.operator_extra_links} == {
        "Kling video",
        "Kling task status",
    }


def test_the_video_link_is_empty_once_the_result_url_expired() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1")
    sensor.execute_complete(CONTEXT, success_event(finish_time=1_000_000))  # 1970: long expired

    assert KlingVideoLink().get_link(sensor, ti_key=mock.Mock()) == ""


@pytest.mark.parametrize("poke_interval", [0, -1])
def test_rejects_a_poke_interval_that_would_spin(poke_interval: float) -> None:
    with pytest.raises(ValueError, match="poke_interval"):
        KlingTaskSensor(task_id="wait", kling_task_id="t", poke_interval=poke_interval)


# -- waits that could never end, a success without a result, hostile task ids (issue 9: 8, 10, 6) ----------


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"poke_interval": math.nan}, "poke_interval"),
        ({"poke_interval": math.inf}, "poke_interval"),
        ({"poke_interval": timedelta(days=2)}, "poke_interval"),
        ({"poke_interval": True}, "poke_interval"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": timedelta(days=8)}, "timeout"),
    ],
    ids=str,
)
def test_a_wait_that_could_never_end_fails_when_the_dag_is_parsed(
    arguments: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number of seconds"):
        KlingTaskSensor(task_id="wait", kling_task_id="t", **arguments)


def test_wait_arguments_accept_timedeltas_up_to_their_limits() -> None:
    sensor = KlingTaskSensor(
        task_id="wait", kling_task_id="t", poke_interval=timedelta(days=1), timeout=timedelta(days=7)
    )

    assert (sensor.poke_interval, sensor.timeout) == (86400.0, 604800.0)


EMPTY_SUCCESS = KlingTask(task_id="t-empty", status=TaskStatus.SUCCESS, urls=[])


def test_poke_raises_not_ready_for_a_success_without_urls(kling_connection: str) -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-empty", deferrable=False)

    with (
        mock.patch.object(KlingHook, "get_task", return_value=EMPTY_SUCCESS),
        sensor.hook,
        pytest.raises(KlingTaskNotReadyError, match="Kling task t-empty succeeded without result URLs"),
    ):
        sensor.poke(CONTEXT)
    assert sensor.kling_result is None


def test_execute_raises_not_ready_for_a_success_without_urls_before_deferring(kling_connection: str) -> None:
    with (
        mock.patch.object(KlingHook, "get_task", return_value=EMPTY_SUCCESS),
        pytest.raises(KlingTaskNotReadyError, match="t-empty succeeded without result URLs"),
    ):
        KlingTaskSensor(task_id="wait", kling_task_id="t-empty").execute(CONTEXT)


def test_a_no_result_event_raises_not_ready_even_with_soft_fail() -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="t-1", soft_fail=True)
    event = {
        "status": "error",
        "kling_task_id": "t-1",
        "reason": "no_result",
        "message": "Kling task t-1 succeeded without result URLs: there is no video to use.",
        "last_status": "Success",
    }

    with pytest.raises(KlingTaskNotReadyError, match="t-1 succeeded without result URLs"):
        sensor.resume_execution("execute_complete", {"event": event}, CONTEXT)
    with pytest.raises(KlingTaskNotReadyError, match="t-1 succeeded without result URLs"):
        sensor.execute_complete(CONTEXT, success_event("t-1", urls=[]))
    assert sensor.kling_result is None


@pytest.mark.parametrize(
    "bad_id",
    ["", "../../../escape", "task\nid", "tâche-1", "x" * 129, "a/b", " task"],
    ids=["empty", "dot-dot", "newline", "non-ascii", "too-long", "slash", "space"],
)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_a_rendered_bad_task_id_fails_without_retries_before_any_http_call(
    kling_connection: str, bad_id: str, deferrable: bool
) -> None:
    sensor = KlingTaskSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull('submit') }}",
        deferrable=deferrable,
        poke_interval=0.05,
    )
    sensor.render_template_fields({"ti": FakeTaskInstance({"submit": bad_id})})  # type: ignore[typeddict-item]

    with (
        mock.patch.object(KlingHook, "get_task") as get_task,
        pytest.raises(AirflowFailException, match="kling_task_id"),
    ):
        sensor.execute(CONTEXT)
    get_task.assert_not_called()


def test_poke_checks_the_task_id_too(kling_connection: str) -> None:
    sensor = KlingTaskSensor(task_id="wait", kling_task_id="../x", deferrable=False)

    with (
        mock.patch.object(KlingHook, "get_task") as get_task,
        pytest.raises(AirflowFailException, match="kling_task_id"),
    ):
        sensor.poke(CONTEXT)
    get_task.assert_not_called()


def test_execution_timeout_caps_the_deferred_wait_and_ends_as_a_task_timeout(kling_connection: str) -> None:
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout, PokeReturnValue, TaskDeferred

    sensor = KlingTaskSensor(
        task_id="wait", kling_task_id="task-1", timeout=3600, execution_timeout=timedelta(seconds=10)
    )
    with (
        mock.patch.object(KlingTaskSensor, "poke", return_value=PokeReturnValue(is_done=False)),
        pytest.raises(TaskDeferred) as deferred,
    ):
        sensor.execute({})
    assert 0 < deferred.value.trigger.timeout <= 10
    event = {
        "status": "error",
        "reason": "timeout",
        "kling_task_id": "task-1",
        "timeout": 9.9,
        "message": "m",
    }
    with pytest.raises(AirflowTaskTimeout, match="execution_timeout"):  # retried, as Airflow's own is
        sensor.execute_complete({}, event)
