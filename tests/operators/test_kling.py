"""KlingSubmitVideoOperator: validation before any HTTP call, deferral, waiting, and never paying twice."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
import respx
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingError,
    KlingSubmitUncertainError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
    KlingTaskTimeoutError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links.kling import KlingTaskStatusLink, KlingVideoLink
from airflow_provider_kling.models import KlingTask, KlingVideoRequest, TaskStatus
from airflow_provider_kling.operators._ledger import KlingTaskLedger, request_digest
from airflow_provider_kling.operators.kling import (
    KlingSubmitVideoOperator,
    default_external_task_id,
    is_static,
)
from airflow_provider_kling.triggers.kling import KlingTaskTrigger

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow.sdk import Context

    from airflow_provider_kling.testing import KlingSimulator

VALID: dict[str, Any] = {"prompt": "A lighthouse at dawn", "aspect_ratio": "16:9", "duration": 5}
MULTI_SHOT_4_OF_5 = {
    "aspect_ratio": "16:9",
    "duration": 5,
    "multi_shot": True,
    "shot_type": "customize",
    "multi_prompt": [
        {"index": 1, "prompt": "a", "duration": "2"},
        {"index": 2, "prompt": "b", "duration": "2"},
    ],
}


# -- a task instance context with a task_state_store, as Airflow 3.3 gives one ------------------------------


class FakeStateStore:
    """The ``task_state_store`` accessor's interface over a dict (it survives the "tries" of a test)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes: list[tuple[str, Any]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))  # JSON values only, as the real store
        self.writes.append((key, value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@dataclass
class FakeTaskInstance:
    dag_id: str = "kling_dag"
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    task_id: str = "submit"
    map_index: int = -1
    try_number: int = 1


@dataclass
class TaskInstanceRun:
    """What one task instance keeps across its tries: its store. ``context()`` is one try's context."""

    store: FakeStateStore | None = field(default_factory=FakeStateStore)
    ti: FakeTaskInstance = field(default_factory=FakeTaskInstance)

    def context(self, try_number: int = 1) -> Context:
        self.ti.try_number = try_number
        context: dict[str, Any] = {"ti": self.ti}
        if self.store is not None:
            context["task_state_store"] = self.store
        return context  # type: ignore[return-value]


@pytest.fixture
def run() -> TaskInstanceRun:
    return TaskInstanceRun()


@pytest.fixture
def no_http() -> Iterator[respx.MockRouter]:
    """Any HTTP request fails the test: nothing is mocked, and every call is recorded."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def operator(**kwargs: Any) -> KlingSubmitVideoOperator:
    kwargs.setdefault("task_id", "submit")
    return KlingSubmitVideoOperator(**kwargs)


def deferred_trigger(op: KlingSubmitVideoOperator, context: Context) -> KlingTaskTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, KlingTaskTrigger)
    return trigger


def success_event(kling_task_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "status": "success",
        "kling_task_id": kling_task_id,
        "urls": [f"https://cdn.example/{kling_task_id}.mp4"],
        "usage_seconds": 5,
        "submit_time": 1756959000,
        "finish_time": 1756959050,
        **overrides,
    }


# -- validation: at parse time for static values, always before any HTTP call ------------------------------


@pytest.mark.parametrize(
    ("arguments", "rule"),
    [
        ({"aspect_ratio": "16:9"}, "R1 input.prompt"),
        ({"prompt": "x"}, "R4 parameters.aspect_ratio"),
        ({"prompt": "x", "aspect_ratio": "16:9", "duration": 20}, "R5 parameters.duration"),
        ({"prompt": "x" * 2501, "aspect_ratio": "16:9"}, "R2 input.prompt"),
        ({"prompt": "x", "aspect_ratio": "16:9", "mode": "hd"}, "R13 parameters.mode"),
        (MULTI_SHOT_4_OF_5, "R11 parameters.multi_prompt"),
        ({"prompt": "see <<<image_1>>>", "aspect_ratio": "16:9"}, "R12 input.prompt"),
    ],
    ids=["R1", "R4", "R5", "R2", "R13", "R11", "R12"],
)
def test_an_invalid_static_request_fails_when_the_dag_is_parsed(
    arguments: dict[str, Any], rule: str, no_http: respx.MockRouter
) -> None:
    with pytest.raises(ValueError, match=re.escape(rule)) as raised:
        operator(**arguments)

    assert "Task 'submit': invalid Kling request" in str(raised.value)
    assert no_http.calls.call_count == 0


def test_an_invalid_whole_request_fails_when_the_dag_is_parsed() -> None:
    body = KlingVideoRequest.build(**VALID).to_api_body()
    body["parameters"]["duration"] = 2

    with pytest.raises(ValueError, match=r"R5 parameters\.duration"):
        operator(request=body)


def test_request_and_keywords_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either as `request` or as keyword arguments"):
        operator(request=KlingVideoRequest.build(**VALID), prompt="other")


def test_a_templated_request_is_validated_after_rendering_and_before_any_call(
    run: TaskInstanceRun, no_http: respx.MockRouter, kling_connection: str, kling_simulator: KlingSimulator
) -> None:
    op = operator(prompt="{{ params.subject }}", aspect_ratio="16:9", duration="{{ params.seconds }}")
    op.render_template_fields({"params": {"subject": "a lighthouse", "seconds": 42}})

    with pytest.raises(AirflowFailException, match=r"R5 parameters\.duration: 42 s"):
        op.execute(run.context())

    assert no_http.calls.call_count == 0
    assert kling_simulator.submitted == []
    assert run.store is not None
    assert run.store.writes == []


def test_templates_render_into_every_request_field() -> None:
    op = operator(
        prompt="{{ params.subject }} at {{ params.time }}",
        negative_prompt="{{ params.avoid }}",
        aspect_ratio="{{ params.ratio }}",
        duration="{{ params.seconds }}",
        mode="{{ params.mode }}",
        external_task_id="{{ params.ext }}",
        image_list=[{"image_url": "https://img.example/{{ params.image }}.png", "type": "first_frame"}],
    )
    params = {
        "subject": "a lighthouse",
        "time": "dawn",
        "avoid": "people",
        "ratio": "9:16",
        "seconds": 7,
        "mode": "std",
        "ext": "my-id",
        "image": "frame",
    }
    op.render_template_fields({"params": params})

    request = op.build_request()

    assert isinstance(request, KlingVideoRequest)
    assert request.to_api_body() == {
        "model": "kling-v3-omni",
        "input": {"prompt": "a lighthouse at dawn", "negative_prompt": "people"},
        "parameters": {
            "mode": "std",
            "aspect_ratio": "9:16",
            "duration": 7,
            "image_list": [{"image_url": "https://img.example/frame.png", "type": "first_frame"}],
            "external_task_id": "my-id",
        },
    }
    assert {"kling_conn_id", "aws_conn_id", "request", "prompt", "multi_prompt"} <= set(op.template_fields)


def test_a_whole_request_is_templated_too() -> None:
    body = KlingVideoRequest.build(**VALID).to_api_body()
    body["input"]["prompt"] = "{{ params.subject }}"
    op = operator(request=body)
    op.render_template_fields({"params": {"subject": "a red kite"}})

    request = op.build_request()

    assert isinstance(request, KlingVideoRequest)
    assert request.input is not None
    assert request.input.prompt == "a red kite"


@pytest.mark.parametrize(
    ("value", "static"),
    [
        ("plain", True),
        ("{{ ds }}", False),
        ("{% if x %}", False),
        (5, True),
        (None, True),
        ([{"image_url": "https://x/{{ ds }}.png"}], False),
        ({"input": {"prompt": "plain"}}, True),
        (mock.Mock(), False),
    ],
)
def test_is_static(value: Any, static: bool) -> None:
    assert is_static(value) is static


# -- the derived external_task_id ------------------------------------------------------------------------


def test_a_short_external_task_id_reads_as_the_task_instance_try() -> None:
    assert (
        default_external_task_id(dag_id="d", run_id="r1", task_id="t", map_index=-1, try_number=2)
        == "d-r1-t-t2"
    )
    assert (
        default_external_task_id(dag_id="d.x", run_id="r:1", task_id="g.t", map_index=3, try_number=1)
        == "d_x-r_1-g_t-m3-t1"
    )


@settings(max_examples=200, deadline=None)
@given(
    dag_id=st.text(min_size=1, max_size=250),
    run_id=st.text(min_size=1, max_size=250),
    task_id=st.text(min_size=1, max_size=250),
    map_index=st.integers(min_value=-1, max_value=100_000),
    try_number=st.integers(min_value=1, max_value=1000),
)
def test_external_task_id_is_safe_short_and_distinct_per_try(
    dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> None:
    first = default_external_task_id(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number
    )
    again = default_external_task_id(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number
    )
    next_try = default_external_task_id(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number + 1
    )

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", first)
    assert first == again
    assert first != next_try
    mapped = f"-m{map_index}" if map_index >= 0 else ""
    if len(f"{dag_id}-{run_id}-{task_id}{mapped}-t{try_number}") > 64:  # hashed, the try still readable
        assert first.endswith(f"{mapped}-t{try_number}-{first[-16:]}")


def test_long_external_task_ids_of_two_runs_differ_by_their_hash() -> None:
    common = {"dag_id": "a" * 40, "task_id": "generate_video", "map_index": 0, "try_number": 1}
    one = default_external_task_id(run_id="scheduled__2026-01-01T00:00:00+00:00", **common)  # type: ignore[arg-type]
    two = default_external_task_id(run_id="scheduled__2026-01-02T00:00:00+00:00", **common)  # type: ignore[arg-type]

    assert len(one) == len(two) == 64
    assert one != two
    assert one.startswith("aaaa")
    assert "-m0-t1-" in one


# -- submitting, deferring, waiting ---------------------------------------------------------------------


def test_submit_without_waiting_returns_the_task_id_and_sends_the_derived_external_id(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    result = operator(**VALID).execute(run.context())

    [body] = kling_simulator.submitted
    assert isinstance(result, str)
    assert kling_simulator.get_task(result) is not None
    assert body["input"] == {"prompt": "A lighthouse at dawn"}
    assert body["parameters"]["external_task_id"] == "kling_dag-manual__2026-01-01T00_00_00_00_00-submit-t1"
    assert run.store is not None
    assert run.store.values == {}  # the Airflow task succeeded: forgotten, a clear submits again


def test_a_user_given_external_task_id_wins(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    operator(**VALID, external_task_id="campaign-42").execute(run.context())

    assert kling_simulator.submitted[0]["parameters"]["external_task_id"] == "campaign-42"


def test_deferrable_wait_defers_with_the_right_trigger_and_records_the_task_first(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    op = operator(
        **VALID, wait_for_completion=True, poll_interval=12, timeout=600, kling_conn_id="kling_default"
    )

    trigger = deferred_trigger(op, run.context())

    [task] = kling_simulator.tasks
    assert trigger.serialize()[1] == {
        "kling_task_id": task.task_id,
        "kling_conn_id": "kling_default",
        "poll_interval": 12.0,
        "timeout": 600.0,
        "deadline": trigger.deadline,
    }
    assert run.store is not None
    # First a record without an id (a submit is on its way), then the id, before the deferral.
    assert [value["kling_task_id"] for _, value in run.store.writes] == [None, task.task_id]
    assert run.store.values[KlingTaskLedger.KEY]["external_task_id"] == task.external_task_id


def test_execute_complete_success_returns_the_finished_task_and_forgets_it(run: TaskInstanceRun) -> None:
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": "t-1", "external_task_id": "x"})
    op = operator(**VALID, wait_for_completion=True)

    result = op.execute_complete(run.context(), success_event("t-1"))

    assert result == {
        "kling_task_id": "t-1",
        "status": "Success",
        "urls": ["https://cdn.example/t-1.mp4"],
        "usage_seconds": 5,
        "submit_time": 1756959000,
        "finish_time": 1756959050,
    }
    assert run.store.values == {}
    assert KlingVideoLink().get_link(op, ti_key=mock.Mock()) == ""  # 2025's URL has long expired
    assert KlingTaskStatusLink().get_link(
        op, ti_key=mock.Mock(dag_id="d", run_id="r", task_id="t", map_index=2)
    )
    fresh = operator(**VALID, wait_for_completion=True)
    fresh.execute_complete(run.context(), success_event("t-2", finish_time=None))
    assert KlingVideoLink().get_link(fresh, ti_key=mock.Mock()) == "https://cdn.example/t-2.mp4"


def test_execute_complete_failure_raises_with_the_vendor_message_and_keeps_the_record(
    run: TaskInstanceRun,
) -> None:
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": "t-1", "external_task_id": "x"})

    with pytest.raises(KlingTaskFailedError, match="Kling task t-1 failed: content moderation"):
        operator(**VALID, wait_for_completion=True).execute_complete(
            run.context(), {"status": "failure", "kling_task_id": "t-1", "message": "content moderation"}
        )
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == "t-1"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {
                "status": "error",
                "kling_task_id": "t-1",
                "reason": "timeout",
                "timeout": 60.0,
                "last_status": "Running",
            },
            KlingTaskTimeoutError,
        ),
        (
            {"status": "error", "kling_task_id": "t-1", "reason": "api_error", "message": "HTTP 401"},
            KlingError,
        ),
    ],
    ids=["timeout", "api_error"],
)
def test_execute_complete_error_events_raise_and_keep_the_record(
    run: TaskInstanceRun, event: dict[str, Any], error: type[Exception]
) -> None:
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": "t-1", "external_task_id": "x"})

    with pytest.raises(error):
        operator(**VALID, wait_for_completion=True).execute_complete(run.context(), event)
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == "t-1"


def test_worker_side_wait_returns_the_finished_task(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    op = operator(**VALID, wait_for_completion=True, deferrable=False, poll_interval=0.05, timeout=30)

    result = op.execute(run.context())

    assert isinstance(result, dict)
    [task] = kling_simulator.tasks
    assert result["kling_task_id"] == task.task_id
    assert result["status"] == "Success"
    assert result["urls"] == list(task.urls)
    assert result["usage_seconds"] == 5
    assert op.kling_result == result


def test_worker_side_wait_fails_with_the_vendor_message(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.fail_next_tasks(1, message="the scene violates the content policy")
    op = operator(**VALID, wait_for_completion=True, deferrable=False, poll_interval=0.05, timeout=30)

    with pytest.raises(KlingTaskFailedError, match="the scene violates the content policy"):
        op.execute(run.context())


def test_worker_side_wait_times_out(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 600
    op = operator(**VALID, wait_for_completion=True, deferrable=False, poll_interval=0.05, timeout=0.2)

    with pytest.raises(KlingTaskTimeoutError):
        op.execute(run.context())
    assert run.store is not None
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == kling_simulator.tasks[0].task_id


# -- never paying twice -------------------------------------------------------------------------------------


def test_a_retry_reattaches_to_the_running_task_instead_of_submitting(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 600
    op = operator(**VALID, wait_for_completion=True)
    first = deferred_trigger(op, run.context(try_number=1))
    # The first try dies here (worker lost, triggerer error...): Airflow runs a second try.

    second = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))

    assert second.kling_task_id == first.kling_task_id
    assert len(kling_simulator.submitted) == 1


def test_a_retry_uses_a_task_that_already_succeeded(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    op = operator(**VALID, wait_for_completion=True)
    first = deferred_trigger(op, run.context(try_number=1))
    kling_simulator.advance_time(60)

    result = operator(**VALID, wait_for_completion=True).execute(run.context(try_number=2))

    assert isinstance(result, dict)
    assert result["kling_task_id"] == first.kling_task_id
    assert result["status"] == "Success"
    assert len(kling_simulator.submitted) == 1
    assert run.store is not None
    assert run.store.values == {}


def test_a_retry_after_a_failed_task_submits_again_and_only_then(
    run: TaskInstanceRun,
    kling_simulator: KlingSimulator,
    kling_connection: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kling_simulator.fail_next_tasks(1, message="upstream model error")
    first = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=1))
    kling_simulator.advance_time(60)

    second = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))

    assert second.kling_task_id != first.kling_task_id
    external_ids = [body["parameters"]["external_task_id"] for body in kling_simulator.submitted]
    assert [external_id[-3:] for external_id in external_ids] == ["-t1", "-t2"]
    assert "failed (upstream model error): submitting a new task" in capsys.readouterr().out


def test_a_submit_in_doubt_is_never_resent(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    # The server creates (and bills) the task, then the answer is lost: the hook cannot know.
    kling_simulator.inject_fault("submit", "server_error", status=502, after_create=True)

    with pytest.raises(KlingSubmitUncertainError) as uncertain:
        operator(**VALID, wait_for_completion=True).execute(run.context(try_number=1))
    assert "kling_dag-manual__2026-01-01T00_00_00_00_00-submit-t1" in str(uncertain.value)

    with pytest.raises(AirflowFailException, match="never confirmed") as refused:
        operator(**VALID, wait_for_completion=True).execute(run.context(try_number=2))

    message = str(refused.value)
    assert "external_task_id 'kling_dag-manual__2026-01-01T00_00_00_00_00-submit-t1'" in message
    assert "/state-store/kling_task?map_index=-1" in message
    assert len(kling_simulator.submitted) == 1


def test_a_person_can_resolve_a_submit_in_doubt_by_recording_the_task(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.inject_fault("submit", "server_error", status=502, after_create=True)
    with pytest.raises(KlingSubmitUncertainError):
        operator(**VALID, wait_for_completion=True).execute(run.context(try_number=1))
    [task] = kling_simulator.tasks
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": task.task_id})  # what the message says to do

    trigger = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))

    assert trigger.kling_task_id == task.task_id
    assert len(kling_simulator.submitted) == 1


def test_a_submit_the_api_refused_leaves_no_record(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "kling", "host": kling_simulator.base_url, "password": "sk-wrong-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", json.dumps(conn))

    with pytest.raises(KlingAuthError):
        operator(**VALID).execute(run.context())

    assert run.store is not None
    assert run.store.values == {}
    assert kling_simulator.submitted == []


def test_a_creation_error_fails_without_retries_and_leaves_no_record(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    # 006001099 (here: an external_task_id already used) proves nothing was created, and the same request
    # can never pass: fail fast (issue 9 fault matrix), never a retry loop.
    operator(**VALID, external_task_id="taken").execute(run.context())
    second = TaskInstanceRun()

    with pytest.raises(AirflowFailException, match=r"refused the request.*006001099"):
        operator(**VALID, external_task_id="taken").execute(second.context())

    assert second.store is not None
    assert second.store.values == {}
    assert len(kling_simulator.submitted) == 1


class FailingStateStore(FakeStateStore):
    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        raise OSError("the API server answered 500 to the state store write")


def test_a_state_store_that_cannot_be_written_stops_the_submit_before_paying(
    kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    run = TaskInstanceRun(store=FailingStateStore())

    with pytest.raises(RuntimeError, match="nothing was submitted and nothing is billed"):
        operator(**VALID).execute(run.context())

    assert kling_simulator.submitted == []


def test_a_cleared_task_that_succeeded_submits_a_new_task(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    op = operator(**VALID, wait_for_completion=True)
    first = deferred_trigger(op, run.context(try_number=1))
    op.execute_complete(run.context(try_number=1), success_event(first.kling_task_id))

    second = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))

    assert second.kling_task_id != first.kling_task_id
    assert len(kling_simulator.submitted) == 2


def test_without_a_state_store_it_warns_once_and_still_submits(
    kling_simulator: KlingSimulator, kling_connection: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = TaskInstanceRun(store=None)

    result = operator(**VALID).execute(run.context())

    assert isinstance(result, str)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "task_state_store" in line]
    assert len(warnings) == 1
    assert "warning" in warnings[0].lower()  # Airflow 3.0 logs "WARNING - ...", later minors "warning"
    assert "Airflow < 3.3" in warnings[0]


def test_s3_inputs_are_resolved_before_the_submit_and_not_on_a_reattach(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    kling_simulator.task_seconds = 600
    arguments = {**VALID, "image_list": [{"image_url": "s3://bucket/frame.png", "type": "first_frame"}]}
    calls: list[tuple[KlingVideoRequest, str | None]] = []

    def resolve(request: KlingVideoRequest, *, aws_conn_id: str | None) -> KlingVideoRequest:
        calls.append((request, aws_conn_id))
        return request.with_input_urls({"parameters.image_list[0].image_url": "https://signed.example/f.png"})

    with mock.patch("airflow_provider_kling.s3_inputs.resolve_s3_inputs", side_effect=resolve):
        deferred_trigger(
            operator(**arguments, wait_for_completion=True, aws_conn_id="my_aws"), run.context(1)
        )
        deferred_trigger(
            operator(**arguments, wait_for_completion=True, aws_conn_id="my_aws"), run.context(2)
        )

    assert [aws_conn_id for _, aws_conn_id in calls] == ["my_aws"]
    [body] = kling_simulator.submitted
    assert body["parameters"]["image_list"][0]["image_url"] == "https://signed.example/f.png"


def test_the_logs_tell_the_story_and_never_the_key(
    run: TaskInstanceRun,
    kling_simulator: KlingSimulator,
    kling_connection: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    op = operator(**VALID, wait_for_completion=True, deferrable=False, poll_interval=0.05, timeout=30)

    result = op.execute(run.context())

    logged = capsys.readouterr().out + caplog.text
    assert isinstance(result, dict)
    task_id = result["kling_task_id"]
    assert f"Recorded Kling task {task_id}" in logged
    assert re.search(rf"Kling task {task_id} succeeded in \d+ s: 1 video\(s\), 5 s billed", logged)
    assert kling_simulator.api_key not in logged
    assert kling_simulator.api_key not in json.dumps(result)


def test_a_dag_file_with_an_invalid_static_request_is_an_import_error(tmp_path: Path) -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined,unused-ignore]

    (tmp_path / "bad_kling_dag.py").write_text(
        "from airflow.sdk import DAG\n"
        "from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator\n"
        "with DAG('bad_kling', schedule=None):\n"
        "    KlingSubmitVideoOperator(task_id='submit', prompt='x', aspect_ratio='16:9', duration=5,\n"
        "        multi_shot=True, shot_type='customize',\n"
        "        multi_prompt=[{'index': 1, 'prompt': 'a', 'duration': '2'}])\n"
    )

    bag = DagBag(dag_folder=str(tmp_path), safe_mode=False)

    [error] = bag.import_errors.values()
    assert "Task 'submit': invalid Kling request" in error
    assert "R11 parameters.multi_prompt" in error
    assert "bad_kling" not in bag.dags


def test_execute_closes_the_hooks_http_client_even_when_it_defers(
    run: TaskInstanceRun,
    kling_simulator: KlingSimulator,
    kling_connection: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[KlingHook] = []
    original_close = KlingHook.close

    def counting_close(hook: KlingHook) -> None:
        closed.append(hook)
        original_close(hook)

    monkeypatch.setattr(KlingHook, "close", counting_close)
    returns = operator(**VALID)
    defers = operator(**VALID, wait_for_completion=True)

    returns.execute(TaskInstanceRun(ti=FakeTaskInstance(task_id="returns")).context())
    deferred_trigger(defers, run.context())

    assert closed == [returns.hook, defers.hook]


# -- waits that could never end, and a success without a result (issue 9, defects 8 and 10) -----------------


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"poll_interval": math.inf}, "poll_interval"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": timedelta(days=2)}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": timedelta(days=8)}, "timeout"),
        ({"timeout": "3600"}, "timeout"),
    ],
    ids=str,
)
def test_a_wait_that_could_never_end_fails_when_the_dag_is_parsed(
    arguments: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number of seconds"):
        operator(**VALID, wait_for_completion=True, **arguments)


def test_wait_arguments_accept_timedeltas_up_to_their_limits() -> None:
    op = operator(**VALID, poll_interval=timedelta(days=1), timeout=timedelta(days=7))

    assert (op.poll_interval, op.timeout) == (86400.0, 604800.0)


def test_execute_complete_no_result_raises_not_ready_and_keeps_the_record(run: TaskInstanceRun) -> None:
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": "t-1", "external_task_id": "x"})
    event = {
        "status": "error",
        "kling_task_id": "t-1",
        "reason": "no_result",
        "message": "Kling task t-1 succeeded without result URLs: there is no video to use.",
        "last_status": "Success",
    }

    with pytest.raises(KlingTaskNotReadyError, match="t-1 succeeded without result URLs"):
        operator(**VALID, wait_for_completion=True).execute_complete(run.context(), event)
    with pytest.raises(KlingTaskNotReadyError, match="t-1 succeeded without result URLs"):
        operator(**VALID, wait_for_completion=True).execute_complete(
            run.context(), success_event("t-1", urls=[])
        )
    # A retry reattaches to the paid task; it never submits again.
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == "t-1"


EMPTY_SUCCESS = KlingTask(task_id="t-empty", status=TaskStatus.SUCCESS, urls=[])


def test_a_worker_side_wait_that_ends_without_urls_raises_not_ready_and_keeps_the_record(
    run: TaskInstanceRun, kling_connection: str
) -> None:
    op = operator(**VALID, wait_for_completion=True, deferrable=False, poll_interval=0.05, timeout=30)

    with (
        mock.patch.object(KlingHook, "submit_task", return_value="t-empty"),
        mock.patch.object(KlingHook, "wait_for_task", return_value=EMPTY_SUCCESS),
        pytest.raises(KlingTaskNotReadyError, match="t-empty succeeded without result URLs"),
    ):
        op.execute(run.context())
    assert run.store is not None
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == "t-empty"


@pytest.mark.parametrize("wait_for_completion", [True, False])
def test_a_reattach_to_a_success_without_urls_raises_not_ready_and_never_submits(
    run: TaskInstanceRun, kling_connection: str, wait_for_completion: bool
) -> None:
    assert run.store is not None
    run.store.set(KlingTaskLedger.KEY, {"kling_task_id": "t-empty", "external_task_id": "x"})
    op = operator(**VALID, wait_for_completion=wait_for_completion)

    with (
        mock.patch.object(KlingHook, "get_task", return_value=EMPTY_SUCCESS),
        mock.patch.object(KlingHook, "submit_task") as submit_task,
        pytest.raises(KlingTaskNotReadyError, match="t-empty succeeded without result URLs"),
    ):
        op.execute(run.context(try_number=2))
    submit_task.assert_not_called()
    assert run.store.values[KlingTaskLedger.KEY]["kling_task_id"] == "t-empty"


# -- issue 10: a retry returns the video of its own request; what cannot pass fails fast --------------------


def test_a_retry_with_the_same_request_reattaches(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    first = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=1))
    second = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))
    assert second.kling_task_id == first.kling_task_id
    assert len(kling_simulator.submitted) == 1
    assert run.store is not None
    assert run.store.values[KlingTaskLedger.KEY]["request_sha256"] == request_digest(
        KlingVideoRequest.build(**VALID)
    )


@pytest.mark.parametrize("map_index", [-1, 3], ids=["unmapped", "mapped"])
def test_a_retry_whose_request_changed_submits_it_and_says_the_earlier_task_is_abandoned(
    kling_simulator: KlingSimulator,
    kling_connection: str,
    map_index: int,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = TaskInstanceRun(ti=FakeTaskInstance(map_index=map_index))
    first = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=1))
    fixed = {**VALID, "prompt": "A lighthouse at dusk"}  # a Variable fixed, a mapped list that shifted

    second = deferred_trigger(operator(**fixed, wait_for_completion=True), run.context(try_number=2))

    assert second.kling_task_id != first.kling_task_id
    assert [body["input"]["prompt"] for body in kling_simulator.submitted] == [
        "A lighthouse at dawn",
        "A lighthouse at dusk",
    ]
    logged = capsys.readouterr().out + caplog.text
    assert f"submitted Kling task {first.kling_task_id}" in logged
    assert "ABANDONED" in logged


def test_the_digest_ignores_the_external_task_id_and_unresolved_inputs_stay_as_given() -> None:
    request = KlingVideoRequest.build(**VALID)
    assert request_digest(request) == request_digest(request.with_external_task_id("try-2"))
    assert request_digest(request) != request_digest(KlingVideoRequest.build(**{**VALID, "duration": 10}))


def test_a_record_written_before_digests_were_kept_is_taken_as_the_same_request(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    first = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=1))
    assert run.store is not None
    run.store.values[KlingTaskLedger.KEY] = {"kling_task_id": first.kling_task_id, "external_task_id": None}

    second = deferred_trigger(operator(**VALID, wait_for_completion=True), run.context(try_number=2))

    assert second.kling_task_id == first.kling_task_id
    assert len(kling_simulator.submitted) == 1


def test_execution_timeout_caps_the_deferred_wait(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    op = operator(**VALID, wait_for_completion=True, timeout=3600, execution_timeout=timedelta(seconds=10))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(run.context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, KlingTaskTrigger)
    assert 0 < trigger.timeout <= 10
    assert deferred.value.timeout is not None
    assert deferred.value.timeout.total_seconds() < 3600


def test_without_execution_timeout_the_wait_is_the_timeout(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    trigger = deferred_trigger(operator(**VALID, wait_for_completion=True, timeout=600), run.context())
    assert trigger.timeout == 600


def test_an_invalid_mapped_value_fails_at_run_time_without_retries(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    # What Airflow does when it unmaps a mapped task: __init__ again, with the expanded value.
    op = operator(prompt="x" * 2501, aspect_ratio="16:9", _airflow_from_mapped=True)

    with pytest.raises(AirflowFailException, match=r"R2 input\.prompt"):
        op.execute(run.context())

    assert kling_simulator.submitted == []


def test_a_request_rendered_as_json_text_is_read(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    from markupsafe import Markup

    body = KlingVideoRequest.build(**VALID, watermark_enabled=False).to_api_body()
    for number, text in enumerate((json.dumps(body), Markup(json.dumps(body)))):  # without/with native
        context = TaskInstanceRun(ti=FakeTaskInstance(task_id=f"submit{number}")).context()
        assert isinstance(operator(request=text).execute(context), str)
    assert [sent["parameters"]["watermark_enabled"] for sent in kling_simulator.submitted] == [False, False]


@pytest.mark.parametrize("request_value", ["not json", "[1, 2]", "42"])
def test_a_request_that_can_never_be_one_fails_without_retries(
    run: TaskInstanceRun, kling_simulator: KlingSimulator, kling_connection: str, request_value: str
) -> None:
    op = operator(request="{{ placeholder }}")
    op.request = request_value  # text: what rendering produced
    with pytest.raises(AirflowFailException, match="`request`"):
        op.execute(run.context())
    assert kling_simulator.submitted == []
