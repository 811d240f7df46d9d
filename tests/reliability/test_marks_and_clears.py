"""
The "never paying twice" rows on marks and clears (``docs/operators.md``; issue 10 item 2), in the real
Airflow of ``conftest.py``, driven through its public REST API (``/api/v2``) as a person would drive the UI:

* **mark success by hand** while the task is deferred (its video still rendering): the operator does not run,
  so its ``kling_task`` state-store record stays; a later **clear** reattaches to the recorded Kling task (no
  second paid task) and, once the video is released, succeeds with that task's id;
* **clear after the task succeeded**: the record was dropped on success, so the clear pays for a new video;
* to get a fresh video after a hand-marked success, **delete the** ``kling_task`` **key**
  (``DELETE /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/state-store/kling_task``), then clear: a new
  task is submitted;
* **mark failed by hand** while deferred, then clear: as a retry, it reattaches (one paid task).

Each row has a DAG (``dag_files/kling_marks_and_clears.py``) and a simulator of its own, so the four rows run
at once and each video is held (:data:`HELD_TASK_SECONDS`) and released on its own clock. A video is released
only once the scheduler has processed the executor event of the try that deferred on it: a trigger that fires
before that loses its try to an Airflow 3.3.2 race (see ``tests/e2e/conftest.py``). And a task marked by hand
is cleared only once the scheduler has ended its run, as a person sees it end in the UI: a clear that lands in
the same instant as the scheduler ending the run (seen here once, Airflow 3.3.2: the clear found the run
still running and left its state alone, then the scheduler marked it failed) leaves a failed run around a
cleared task instance that is never scheduled again. The module fixture drives
the rows, one thread each, and snapshots what each step left (task instance states and tries, the state
store read through the REST API and the database, the simulator's billed tasks, the try logs, XComs); each
test asserts one row.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from dags.test_kling_realtime import query, wait_for

from airflow_provider_kling.operators._ledger import KlingTaskLedger
from airflow_provider_kling.operators.kling import default_external_task_id
from airflow_provider_kling.testing import KlingSimulator

from ._support import AirflowRestApi, try_logs
from .dag_files.kling_marks_and_clears import PROMPTS, TASK_ID, dag_id

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_kling.testing.simulator import SimulatedTask

    from ._support import ReliabilityDeployment

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

RUN_ID = "marks_and_clears"
KEY = KlingTaskLedger.KEY
#: Simulator seconds a video takes: "forever", until the test moves the row's clock.
HELD_TASK_SECONDS = 3600.0
#: Bounds, in seconds.
STARTUP_TIMEOUT = 180.0
STEP_TIMEOUT = 180.0
#: How long the triggerer may take to drop the trigger of a task marked by hand.
TRIGGER_GONE_TIMEOUT = 60.0
#: What each row does to its deferred first try: mark it (``None``: let it succeed), then delete the key?
ROWS: dict[str, tuple[str | None, bool]] = {
    "mark_success_then_clear": ("success", False),
    "clear_after_success": (None, False),
    "mark_success_delete_key_then_clear": ("success", True),
    "mark_failed_then_clear": ("failed", False),
}
REATTACHED = re.compile(r"Reattaching to Kling task (\S+) of an earlier try: it is (\w+)")
RECORDED = re.compile(r"Recorded Kling task (\S+) \(external_task_id")
SUCCEEDED = re.compile(r"Kling task (\S+) succeeded")


@dataclass
class Row:
    """One row's DAG, simulator, what the test does to it, and what each step left behind."""

    name: str
    simulator: KlingSimulator
    mark: str | None
    delete_key: bool
    #: Snapshots, by step (see :func:`_drive`).
    seen: dict[str, Any] = field(default_factory=dict)
    #: Wall-clock seconds of each step, from the row's trigger.
    timeline: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: Filled in at the end.
    tasks: list[SimulatedTask] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def dag_id(self) -> str:
        return dag_id(self.name)

    @property
    def prompt(self) -> str:
        return PROMPTS[self.name]

    def paid(self) -> int:
        """How many tasks the row's simulator created (billed) for the row's prompt."""
        return Counter(body["input"]["prompt"] for body in self.submitted)[self.prompt]

    def external_task_id(self, try_number: int) -> str:
        return default_external_task_id(
            dag_id=self.dag_id, run_id=RUN_ID, task_id=TASK_ID, map_index=-1, try_number=try_number
        )

    def log(self, attempt: int) -> str:
        return try_logs(self.logs, attempt)

    def diagnostics(self) -> str:
        seen = {name: value for name, value in self.seen.items() if not name.startswith("log_")}
        return f"row={self.name} error={self.error}\nseen={seen}\ntimeline={self.timeline}"


@dataclass
class Rows:
    deployment: ReliabilityDeployment
    rows: dict[str, Row]
    seconds: float
    listening: set[tuple[str, str, int]]
    #: REST writes sent again after a 500 "Database error" (SQLite's lock).
    database_errors: list[str]


def _xcom(deployment: ReliabilityDeployment, dag: str) -> Any:
    rows = query(
        deployment.home,
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'",
        dag,
        RUN_ID,
        TASK_ID,
    )
    return json.loads(rows[0][0]) if rows else None


def _trigger_exists(deployment: ReliabilityDeployment, trigger_id: int | None) -> bool:
    return bool(
        trigger_id is not None and query(deployment.home, "SELECT 1 FROM trigger WHERE id = ?", trigger_id)
    )


def _drive(row: Row, deployment: ReliabilityDeployment, api: AirflowRestApi) -> None:
    """Run one row through its steps, recording what each left in ``row.seen``."""
    started = time.monotonic()
    simulator, dag, seen = row.simulator, row.dag_id, row.seen

    def mark(step: str) -> None:
        row.timeline[step] = round(time.monotonic() - started, 1)

    def wait(condition: Any, what: str, timeout: float = STEP_TIMEOUT) -> Any:
        return wait_for(condition, timeout=timeout, what=f"{row.name}: {what}", deployment=deployment)

    def instance() -> tuple[str | None, int] | None:
        return deployment.instances(dag, RUN_ID).get(TASK_ID)

    def record() -> Any:
        return api.state_store_get(dag, RUN_ID, TASK_ID, KEY)

    api.trigger(dag, RUN_ID)
    wait(lambda: deployment.deferred_and_seen(dag, RUN_ID, {TASK_ID: 1}), "try 1 to defer")
    mark("try 1 deferred")
    seen["first_task_ids"] = [task.task_id for task in simulator.tasks]
    seen["first_status_while_deferred"] = [task.status for task in simulator.tasks]
    seen["record_while_deferred"] = record()
    trigger_id, _ = deployment.trigger_of(dag, RUN_ID, TASK_ID)
    seen["trigger_while_deferred"] = trigger_id

    if row.mark is None:
        simulator.advance_time(2 * HELD_TASK_SECONDS)  # the video is ready; the wait sees it next poll
        wait(lambda: instance() == ("success", 1), "try 1 to succeed")
        mark("try 1 succeeded")
        seen["xcom_after_first_success"] = _xcom(deployment, dag)
        seen["record_after_first_success"] = record()
        seen["db_record_after_first_success"] = deployment.state_store(dag, TASK_ID)
    else:
        changed = api.set_state(dag, RUN_ID, TASK_ID, row.mark)
        mark(f"marked {row.mark}")
        seen["marked"] = [(ti["task_id"], ti["state"], ti["try_number"]) for ti in changed]
        deadline = time.monotonic() + TRIGGER_GONE_TIMEOUT
        while _trigger_exists(deployment, trigger_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        seen["trigger_gone_after_mark"] = not _trigger_exists(deployment, trigger_id)
        mark("the marked try's trigger is gone")
        # Clear only once the scheduler has ended the run (see the module docstring).
        wait(lambda: deployment.run_state(dag, RUN_ID) == row.mark, f"the run to end {row.mark}")
        mark(f"run ended {row.mark}")
        seen["instance_after_mark"] = instance()
        seen["status_after_mark"] = [task.status for task in simulator.tasks]
        seen["xcom_after_mark"] = _xcom(deployment, dag)
        seen["log_1_after_mark"] = try_logs(deployment.log_files(dag, TASK_ID), 1)
        seen["record_after_mark"] = record()
        seen["db_record_after_mark"] = deployment.state_store(dag, TASK_ID)
        if row.delete_key:
            api.state_store_delete(dag, RUN_ID, TASK_ID, KEY)
            mark("record deleted")
            seen["record_after_delete"] = record()
            seen["db_record_after_delete"] = deployment.state_store(dag, TASK_ID)

    cleared = api.clear(dag, RUN_ID, TASK_ID)
    mark("cleared")
    seen["cleared"] = [(ti["task_id"], ti["try_number"]) for ti in cleared]
    wait(lambda: deployment.deferred_and_seen(dag, RUN_ID, {TASK_ID: 2}), "try 2 to defer")
    mark("try 2 deferred")
    seen["record_while_try_2_deferred"] = record()
    seen["paid_before_release"] = len(simulator.submitted)
    simulator.advance_time(2 * HELD_TASK_SECONDS)
    wait(lambda: deployment.run_state(dag, RUN_ID) not in (None, "queued", "running"), "the run to end")
    mark("run ended")
    seen["final_instance"] = instance()
    seen["final_run_state"] = deployment.run_state(dag, RUN_ID)
    seen["final_xcom"] = _xcom(deployment, dag)
    seen["final_record"] = record()
    seen["final_db_record"] = deployment.state_store(dag, TASK_ID)


@pytest.fixture(scope="module")
def row_simulators() -> Iterator[dict[str, KlingSimulator]]:
    """A simulator per row, each on its own clock; every video held until the test moves that clock."""
    simulators = {name: KlingSimulator(task_seconds=HELD_TASK_SECONDS) for name in ROWS}
    try:
        for simulator in simulators.values():
            simulator.start()
        yield simulators
    finally:
        for simulator in simulators.values():
            simulator.stop()


@pytest.fixture(scope="module")
def marks_and_clears(
    reliability_airflow: ReliabilityDeployment, row_simulators: dict[str, KlingSimulator]
) -> Rows:
    """Drive every row at once (one thread each); return what they left."""
    deployment = reliability_airflow
    started = time.monotonic()
    rows = {
        name: Row(name=name, simulator=row_simulators[name], mark=state, delete_key=delete)
        for name, (state, delete) in ROWS.items()
    }
    wait_for(
        lambda: (
            query(
                deployment.home,
                f"SELECT count(*) FROM dag WHERE is_stale = 0 AND dag_id IN ({', '.join('?' * len(rows))})",
                *(row.dag_id for row in rows.values()),
            )[0][0]
            == len(rows)
        ),
        timeout=STARTUP_TIMEOUT,
        what="the DAG processor to register every row's DAG",
        deployment=deployment,
    )
    wait_for(
        lambda: AirflowRestApi.ready(deployment),
        timeout=STARTUP_TIMEOUT,
        what="the API server to answer",
        deployment=deployment,
    )
    api = AirflowRestApi(deployment)
    try:
        for row in rows.values():
            api.create_connection(
                row.dag_id, "kling", host=row.simulator.base_url, password=row.simulator.api_key
            )

        def drive(row: Row) -> None:
            try:
                _drive(row, deployment, api)
            except Exception:
                row.error = traceback.format_exc()

        with ThreadPoolExecutor(max_workers=len(rows), thread_name_prefix="row") as pool:
            list(pool.map(drive, rows.values()))
        listening = deployment.listening()
    finally:
        api.close()
    database_errors = api.database_errors
    for row in rows.values():
        row.tasks = row.simulator.tasks
        row.submitted = row.simulator.submitted
        row.logs = deployment.log_files(row.dag_id, TASK_ID)
    return Rows(deployment, rows, time.monotonic() - started, listening, database_errors)


def _row(result: Rows, name: str) -> Row:
    row = result.rows[name]
    assert row.error is None, f"{row.diagnostics()}\n{row.log(1)[-3000:]}\n{row.log(2)[-3000:]}"
    return row


def _assert_record(value: Any, kling_task_id: str, external_task_id: str) -> None:
    assert isinstance(value, dict), value
    assert value["kling_task_id"] == kling_task_id, value
    assert value["external_task_id"] == external_task_id, value
    assert re.fullmatch(r"[0-9a-f]{64}", value["request_sha256"]), value


def _assert_marked_try_did_not_run(row: Row, state: str) -> str:
    """The hand-marked first try: marked, its wait dropped, the operator never resumed; its record kept."""
    seen = row.seen
    (first,) = seen["first_task_ids"]
    assert seen["marked"] == [(TASK_ID, state, 1)], row.diagnostics()
    assert seen["instance_after_mark"] == (state, 1), row.diagnostics()
    assert seen["trigger_gone_after_mark"], row.diagnostics()  # the triggerer dropped the wait
    assert seen["status_after_mark"] in (["Pending"], ["Running"])  # the video was still rendering
    # The operator did not run: no execute_complete (no result, no XCom), no record dropped.
    assert not SUCCEEDED.search(seen["log_1_after_mark"]), seen["log_1_after_mark"][-3000:]
    assert seen["xcom_after_mark"] is None
    _assert_record(seen["record_while_deferred"], first, row.external_task_id(1))
    assert seen["record_after_mark"] == seen["record_while_deferred"]  # read through the REST API
    assert [key for key, _ in seen["db_record_after_mark"]] == [KEY]  # and in the database
    return str(first)


def _assert_reattached_once(row: Row, first: str) -> None:
    """The clear's try reattached to the first try's task, waited, and succeeded with its id; one paid."""
    seen = row.seen
    assert seen["cleared"] == [(TASK_ID, 1)], row.diagnostics()
    assert seen["final_instance"] == ("success", 2), row.diagnostics()
    assert seen["final_run_state"] == "success"
    assert row.paid() == 1 == len(row.submitted) == seen["paid_before_release"], row.diagnostics()
    assert row.tasks[0].external_task_id == row.external_task_id(1)  # paid by try 1, never by try 2
    second = row.log(2)
    assert REATTACHED.findall(second) == [(first, "Pending")], second[-3000:]
    assert not RECORDED.search(second), second[-3000:]
    _assert_record(seen["record_while_try_2_deferred"], first, row.external_task_id(1))
    assert SUCCEEDED.findall(second) == [first]
    assert seen["final_xcom"]["kling_task_id"] == first
    assert seen["final_xcom"]["status"] == "Success"
    # A success drops the record: a later clear would pay for a new video.
    assert seen["final_record"] is None
    assert seen["final_db_record"] == []


def _assert_submitted_afresh(row: Row, first: str) -> None:
    """The clear's try paid for a new task, said nothing of reattaching, and succeeded with the new id."""
    seen = row.seen
    assert seen["final_instance"] == ("success", 2), row.diagnostics()
    assert seen["final_run_state"] == "success"
    assert row.paid() == 2 == len(row.submitted) == seen["paid_before_release"], row.diagnostics()
    by_external = {task.external_task_id: task.task_id for task in row.tasks}
    assert by_external[row.external_task_id(1)] == first
    second_task = by_external[row.external_task_id(2)]  # paid by try 2
    assert second_task != first
    second = row.log(2)
    assert "Reattaching" not in second, second[-3000:]
    assert "earlier try" not in second, second[-3000:]
    assert RECORDED.findall(second) == [second_task], second[-3000:]
    _assert_record(seen["record_while_try_2_deferred"], second_task, row.external_task_id(2))
    assert SUCCEEDED.findall(second) == [second_task]
    assert seen["final_xcom"]["kling_task_id"] == second_task
    assert seen["final_record"] is None


def test_mark_success_while_deferred_keeps_the_record_and_a_clear_reattaches(marks_and_clears: Rows) -> None:
    """Row "mark success by hand": the record stays; a later clear reattaches and waits; one paid task."""
    row = _row(marks_and_clears, "mark_success_then_clear")
    first = _assert_marked_try_did_not_run(row, "success")
    _assert_reattached_once(row, first)


def test_clear_after_a_normal_success_generates_a_new_video(marks_and_clears: Rows) -> None:
    """Row "clear after the task succeeded": the record was dropped on success; the clear pays again."""
    row = _row(marks_and_clears, "clear_after_success")
    seen = row.seen
    (first,) = seen["first_task_ids"]
    _assert_record(seen["record_while_deferred"], first, row.external_task_id(1))
    assert seen["xcom_after_first_success"]["kling_task_id"] == first
    assert SUCCEEDED.findall(row.log(1)) == [first]
    assert seen["record_after_first_success"] is None  # dropped on success
    assert seen["db_record_after_first_success"] == []
    assert seen["cleared"] == [(TASK_ID, 1)], row.diagnostics()
    _assert_submitted_afresh(row, first)


def test_deleting_the_record_after_a_marked_success_makes_a_clear_submit_afresh(
    marks_and_clears: Rows,
) -> None:
    """Row "mark success by hand", the documented way to a fresh video: DELETE the key, then clear."""
    row = _row(marks_and_clears, "mark_success_delete_key_then_clear")
    first = _assert_marked_try_did_not_run(row, "success")
    assert row.seen["record_after_delete"] is None  # GET answers 404
    assert row.seen["db_record_after_delete"] == []
    assert row.seen["cleared"] == [(TASK_ID, 1)], row.diagnostics()
    _assert_submitted_afresh(row, first)


def test_mark_failed_while_deferred_then_clear_reattaches(marks_and_clears: Rows) -> None:
    """Row "mark failed by hand, then clear": as a retry, it reattaches to the recorded task; one paid."""
    row = _row(marks_and_clears, "mark_failed_then_clear")
    first = _assert_marked_try_did_not_run(row, "failed")
    _assert_reattached_once(row, first)


def test_the_rows_ran_within_bounds_on_loopback(marks_and_clears: Rows) -> None:
    result = marks_and_clears
    for row in result.rows.values():
        print(f"marks and clears: {row.name}: {row.timeline}")
    print(f"marks and clears: the four rows took {result.seconds:.1f} s")
    print(f"marks and clears: REST writes sent again after a database error: {result.database_errors}")
    assert result.listening, "no listening socket found: the API server should be one"
    assert {address for _, address, _ in result.listening} == {"127.0.0.1"}, result.listening
    assert all(row.simulator.base_url.startswith("http://127.0.0.1:") for row in result.rows.values())
