"""
The fault matrix rows that need a real Airflow with real processes (issue 9).

One real Airflow (``conftest.py``), two DAG runs (``dag_files/kling_reliability.py``), one simulator. The
module fixture ``matrix`` drives both runs through every fault, in this order, then stops Airflow; each
test below asserts one row on what the run left behind (task instance states and tries, the simulator's
billed tasks, log files, the trigger table):

1. Both runs are triggered. Every video is held (``task_seconds`` = 1 h of simulator time) so nothing
   finishes before the test lets it. Inside the tasks, the DAG file's store faults act: a worker
   ``SIGKILL``s itself right after its submit was recorded, one right before a submit began, one between
   "submit begun" and the request; the state store of another task refuses every write.
2. Once ``wait_times_out`` is waiting in the triggerer, the simulator clock moves 1000 s: every task so
   far is ``Running`` (not finished), so that wait's timeout passes while its task is Running.
3. Once every wait is deferred: an API outage (connection resets, then 503s on every status query) for
   :data:`OUTAGE_SECONDS`, many poll intervals, while the triggers poll.
4. A status answer is held in flight (a ``slow`` fault) and the triggerer is killed with ``SIGKILL``
   (with its trigger-runner child) mid-poll, then a new triggerer is started; it takes over the triggers.
5. Once ``wait_times_out``'s retry has reattached and deferred, the clock moves to the end: every video
   succeeds, and the waits see it on their next poll.

The Airflow 3.3.2 resume race (a trigger that fires before the scheduler processed its deferring worker's
exit fails the try; see ``tests/e2e/conftest.py``) is kept out by releasing the videos only after the
scheduler logged each deferring try's executor event.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from dags.test_kling_realtime import AIRFLOW, query, wait_for

from airflow_provider_kling.operators.kling import default_external_task_id

from ._support import count, trigger_logs, try_logs
from .dag_files.kling_reliability import (
    POLL_SECONDS,
    SHORT_TIMEOUT,
    STORE_FAILURE_MESSAGE,
)

if TYPE_CHECKING:
    from airflow_provider_kling.testing import KlingSimulator
    from airflow_provider_kling.testing.simulator import SimulatedTask

    from ._support import ReliabilityDeployment

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(1200)]

DAG_ID = "kling_reliability"
FAILING_DAG_ID = "kling_reliability_failing"
RUN_ID = "fault_matrix"
#: Simulator seconds a video takes: "forever", until the test moves the clock.
HELD_TASK_SECONDS = 3600.0
#: How long the API outage lasts, in (wall-clock) seconds: many poll intervals.
OUTAGE_SECONDS = 12.0
#: Connection resets at the start of the outage (then 503s until it ends).
OUTAGE_RESETS = 6
#: How long the status answer in flight at the triggerer's death is held.
SLOW_ANSWER_SECONDS = 5.0
#: Bounds, in seconds.
STARTUP_TIMEOUT = 180.0
PHASE_TIMEOUT = 300.0

PROMPTS = {
    "worker_killed_after_submit": "fault matrix: the worker is killed right after the submit",
    "worker_killed_before_submit": "fault matrix: the worker is killed right before the submit",
    "survives_triggerer_kill": "fault matrix: the triggerer is killed mid-poll",
    "rides_out_api_outage": "fault matrix: the API is down for a while",
    "wait_times_out": "fault matrix: the wait times out",
    "worker_killed_after_begin_submit": (
        "fault matrix: the worker is killed between recording the submit and sending it"
    ),
    "state_store_write_fails": "fault matrix: the task state store cannot be written",
}


@dataclass
class Matrix:
    """What the two runs left behind, snapshotted when they ended."""

    deployment: ReliabilityDeployment
    run_state: str | None
    failing_run_state: str | None
    instances: dict[str, tuple[str | None, int]]
    submitted: list[dict[str, Any]]
    #: Submit requests the simulator received (a refused or failed one included).
    submit_requests: int
    tasks: list[SimulatedTask]
    logs: dict[str, dict[str, str]]
    #: What the outage did: its length, the faults that fired, the task states around it.
    outage: dict[str, Any] = field(default_factory=dict)
    #: What the triggerer's death did: pids, jobs, the trigger of ``survives_triggerer_kill``.
    triggerer_kill: dict[str, Any] = field(default_factory=dict)
    #: ``(process, address, port)`` of every listening socket of Airflow's processes, mid-run.
    listening: set[tuple[str, str, int]] = field(default_factory=set)
    #: Wall-clock seconds of each phase, from the trigger of the runs.
    timeline: dict[str, float] = field(default_factory=dict)

    def paid(self, task_id: str) -> int:
        """How many tasks the simulator created (billed) for one Airflow task's prompt."""
        return Counter(body["input"]["prompt"] for body in self.submitted)[PROMPTS[task_id]]

    def paid_by_try(self, task_id: str, try_number: int, *, dag_id: str = DAG_ID) -> list[SimulatedTask]:
        """The simulator's tasks whose ``external_task_id`` is the one a try of ``task_id`` derives."""
        external = default_external_task_id(
            dag_id=dag_id, run_id=RUN_ID, task_id=task_id, map_index=-1, try_number=try_number
        )
        return [task for task in self.tasks if task.external_task_id == external]

    def kling_task_id(self, task_id: str) -> str:
        (task,) = [task for task in self.tasks if task.request["input"]["prompt"] == PROMPTS[task_id]]
        return task.task_id

    def diagnostics(self) -> str:
        return f"instances={self.instances}\ntimeline={self.timeline}\nsubmitted={len(self.submitted)}"


def _trigger(deployment: ReliabilityDeployment, dag_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(AIRFLOW), "dags", "trigger", dag_id, "--run-id", RUN_ID],
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def matrix(reliability_airflow: ReliabilityDeployment, _kling_simulator_session: KlingSimulator) -> Matrix:
    """Drive both DAG runs through every fault (see the module docstring); return what they left."""
    deployment, simulator = reliability_airflow, _kling_simulator_session
    simulator.reset()
    simulator.task_seconds = HELD_TASK_SECONDS
    home = deployment.home

    def wait(condition: Any, what: str, timeout: float = PHASE_TIMEOUT) -> Any:
        return wait_for(condition, timeout=timeout, what=what, deployment=deployment)

    wait(
        lambda: (
            query(
                home,
                "SELECT count(*) FROM dag WHERE dag_id IN (?, ?) AND is_stale = 0",
                DAG_ID,
                FAILING_DAG_ID,
            )[0][0]
            == 2
        ),
        "the DAG processor to register both DAGs",
        STARTUP_TIMEOUT,
    )
    triggers = [_trigger(deployment, DAG_ID), _trigger(deployment, FAILING_DAG_ID)]
    for process in triggers:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output[-3000:]
    started = time.monotonic()  # 1. both runs triggered
    timeline: dict[str, float] = {}

    def mark(name: str) -> None:
        timeline[name] = round(time.monotonic() - started, 1)

    # 2. The wait that must time out is deferred: from now on its task is Running, never finished.
    wait(
        lambda: deployment.deferred_and_seen(DAG_ID, RUN_ID, {"wait_times_out": 1}),
        "wait_times_out to defer (try 1)",
    )
    timeout_wait_deferred = time.monotonic()
    simulator.advance_time(HELD_TASK_SECONDS / 3.6)  # past the Pending fifth: Running
    mark("wait_times_out deferred; clock moved: Running")

    # 3. Every other wait is deferred (its worker's exit processed), then the API outage.
    wait(
        lambda: deployment.deferred_and_seen(
            DAG_ID,
            RUN_ID,
            {
                "worker_killed_after_submit": 2,
                "worker_killed_before_submit": 2,
                "survives_triggerer_kill": 1,
                "rides_out_api_outage": 1,
            },
        ),
        "every other wait to be deferred",
    )
    mark("all waits deferred")
    # A worker that reattaches (wait_times_out's retry) must not meet the outage: its status query
    # would fail its last try. If the first wait's timeout may fall into the outage, let the retry
    # reattach first; its fresh timeout then covers the outage and the triggerer's death.
    if time.monotonic() + OUTAGE_SECONDS + 30 > timeout_wait_deferred + SHORT_TIMEOUT:
        wait(
            lambda: deployment.deferred_and_seen(DAG_ID, RUN_ID, {"wait_times_out": 2}),
            "wait_times_out's retry to reattach and defer (before the outage)",
        )
        mark("wait_times_out retry deferred (before the outage)")
    wait(
        lambda: all(
            deployment.trigger_of(DAG_ID, RUN_ID, task_id)[1] is not None
            for task_id in ("survives_triggerer_kill", "rides_out_api_outage")
        ),
        "the triggerer to hold the waits",
    )

    fired_before = Counter(simulator.stats()["faults_fired"])
    status_before = simulator.requests["status"]
    simulator.inject_fault("status", "reset", times=OUTAGE_RESETS)
    simulator.inject_fault("status", "server_error", times=1_000_000, status=503)
    outage_started = time.monotonic()
    mark("outage starts")
    while time.monotonic() - outage_started < OUTAGE_SECONDS:
        deployment.check_alive()
        time.sleep(0.5)
    simulator.clear_faults()
    outage_seconds = time.monotonic() - outage_started
    fired = Counter(simulator.stats()["faults_fired"]) - fired_before
    status_during = simulator.requests["status"] - status_before
    mark("outage ends")
    during = deployment.instances(DAG_ID, RUN_ID)
    status_after = simulator.requests["status"]
    wait(lambda: simulator.requests["status"] >= status_after + 5, "status queries to be answered again", 60)
    outage = {
        "seconds": outage_seconds,
        "fired": dict(fired),
        "status_requests": status_during,
        "instances_right_after": during,
        "instances_after_recovery": deployment.instances(DAG_ID, RUN_ID),
    }

    # 4. The triggerer dies mid-poll (a status answer in flight) and a new one takes over.
    trigger_id, old_triggerer = deployment.trigger_of(DAG_ID, RUN_ID, "survives_triggerer_kill")
    old_jobs = deployment.triggerer_jobs()
    slow_before = simulator.stats()["faults_fired"].get("status:slow", 0)
    simulator.inject_fault("status", "slow", times=3, delay=SLOW_ANSWER_SECONDS)
    wait(
        lambda: simulator.stats()["faults_fired"].get("status:slow", 0) > slow_before,
        "a status query of the triggerer to be in flight",
        60,
    )
    in_flight_since = time.monotonic()
    killed = deployment.kill("triggerer")
    killed_after = time.monotonic() - in_flight_since
    simulator.clear_faults()
    mark("triggerer killed")
    deployment.restart("triggerer", "triggerer-2")
    new_jobs = wait(
        lambda: [job for job in deployment.triggerer_jobs() if job not in old_jobs],
        "the new triggerer to register",
    )
    wait(
        lambda: deployment.trigger_of(DAG_ID, RUN_ID, "survives_triggerer_kill") == (trigger_id, new_jobs[0]),
        "the new triggerer to take over the wait's trigger",
    )
    mark("new triggerer holds the trigger")
    listening = deployment.listening()
    triggerer_kill = {
        "pids": killed,
        "in_flight_for": killed_after,
        "trigger_id": trigger_id,
        "old_triggerer": old_triggerer,
        "old_jobs": old_jobs,
        "new_job": new_jobs[0],
    }

    # 5. wait_times_out timed out and its retry reattached; then every video finishes.
    wait(
        lambda: deployment.deferred_and_seen(DAG_ID, RUN_ID, {"wait_times_out": 2}),
        "wait_times_out's retry to reattach and defer",
    )
    mark("wait_times_out retry deferred")
    simulator.advance_time(2 * HELD_TASK_SECONDS)
    for dag_id in (DAG_ID, FAILING_DAG_ID):
        wait(
            lambda dag_id=dag_id: deployment.run_state(dag_id, RUN_ID) not in (None, "queued", "running"),
            f"the run of {dag_id} to finish",
        )
    mark("runs finished")

    return Matrix(
        deployment=deployment,
        run_state=deployment.run_state(DAG_ID, RUN_ID),
        failing_run_state=deployment.run_state(FAILING_DAG_ID, RUN_ID),
        instances={  # the task ids of the two DAGs differ
            task_id: state
            for dag_id in (DAG_ID, FAILING_DAG_ID)
            for task_id, state in deployment.instances(dag_id, RUN_ID).items()
        },
        submitted=simulator.submitted,
        submit_requests=simulator.requests["submit"],
        tasks=simulator.tasks,
        logs={
            task_id: deployment.log_files(dag_id, task_id)
            for dag_id, task_ids in (
                (DAG_ID, PROMPTS.keys() - {"worker_killed_after_begin_submit", "state_store_write_fails"}),
                (FAILING_DAG_ID, {"worker_killed_after_begin_submit", "state_store_write_fails"}),
            )
            for task_id in task_ids
        },
        outage=outage,
        triggerer_kill=triggerer_kill,
        listening=listening,
        timeline=timeline,
    )


def _all_logs(matrix: Matrix, task_id: str) -> str:
    return "\n".join(matrix.logs[task_id].values())


def test_the_run_of_every_recoverable_fault_succeeds(matrix: Matrix) -> None:
    assert matrix.run_state == "success", matrix.diagnostics()
    assert matrix.failing_run_state == "failed", matrix.diagnostics()
    # Nobody paid twice; the failing tasks paid nothing.
    assert {task_id: matrix.paid(task_id) for task_id in PROMPTS} == {
        "worker_killed_after_submit": 1,
        "worker_killed_before_submit": 1,
        "survives_triggerer_kill": 1,
        "rides_out_api_outage": 1,
        "wait_times_out": 1,
        "worker_killed_after_begin_submit": 0,
        "state_store_write_fails": 0,
    }, matrix.diagnostics()
    assert len(matrix.submitted) == matrix.submit_requests == 5  # no submit request was even resent
    # Every server of the run (the API server; no log servers) listens on 127.0.0.1 only.
    assert matrix.listening, "no listening socket found: the API server should be one"
    assert {address for _, address, _ in matrix.listening} == {"127.0.0.1"}, matrix.listening
    print(f"fault matrix timeline (s after the runs were triggered): {matrix.timeline}")
    api_key = matrix.deployment.env["AIRFLOW_CONN_KLING_DEFAULT"]
    assert json.loads(api_key)["password"] not in "\n".join(
        text for files in matrix.logs.values() for text in files.values()
    )


def test_worker_sigkilled_right_after_the_submit_retry_reattaches(matrix: Matrix) -> None:
    """Row: worker killed (SIGKILL) right after the submit -> the next try reattaches; one task."""
    task_id = "worker_killed_after_submit"
    assert matrix.instances[task_id] == ("success", 2), matrix.diagnostics()
    assert matrix.paid(task_id) == 1
    assert len(matrix.paid_by_try(task_id, 1)) == 1  # the first try paid ...
    assert matrix.paid_by_try(task_id, 2) == []  # ... and the second did not pay again
    kling_task_id = matrix.kling_task_id(task_id)
    files = matrix.logs[task_id]
    first, second = try_logs(files, 1), try_logs(files, 2)
    assert (
        "Injected crash: the worker process kills itself with SIGKILL right after the submit of "
        f"Kling task {kling_task_id} was recorded" in first
    )
    assert "Process terminated by signal" in first  # the supervisor saw the SIGKILL
    assert re.search(rf"Reattaching to Kling task {kling_task_id} of an earlier try: it is \w+", second)
    assert count(rf"Kling task {kling_task_id} succeeded", [second]) == 1


def test_worker_sigkilled_right_before_the_submit_retry_submits_once(matrix: Matrix) -> None:
    """Row: worker killed (SIGKILL) right before the submit (nothing recorded) -> one submit, later."""
    task_id = "worker_killed_before_submit"
    assert matrix.instances[task_id] == ("success", 2), matrix.diagnostics()
    assert matrix.paid(task_id) == 1
    assert matrix.paid_by_try(task_id, 1) == []
    assert len(matrix.paid_by_try(task_id, 2)) == 1
    files = matrix.logs[task_id]
    first, second = try_logs(files, 1), try_logs(files, 2)
    assert "kills itself with SIGKILL right before the submit began: nothing is recorded" in first
    assert "Process terminated by signal" in first
    assert "Reattaching" not in second
    assert count(rf"Kling task {matrix.kling_task_id(task_id)} succeeded", [second]) == 1


def test_worker_sigkilled_after_the_submit_began_is_never_resent(matrix: Matrix) -> None:
    """
    Row (the other point "right before"): killed after "submit begun" was recorded, before the request.

    Whether the request left is unknown, so the next try does not resend: it fails at once (no retry
    loop, though it has retries left), pays nothing and tells how to resolve it; the record is kept.
    """
    task_id = "worker_killed_after_begin_submit"
    assert matrix.instances[task_id] == ("failed", 2), matrix.diagnostics()
    assert matrix.paid(task_id) == 0
    files = matrix.logs[task_id]
    first, second = try_logs(files, 1), try_logs(files, 2)
    assert "Injected crash: the worker process kills itself with SIGKILL after recording" in first
    assert "started a Kling submit that was never confirmed" in second
    external = default_external_task_id(
        dag_id=FAILING_DAG_ID, run_id=RUN_ID, task_id=task_id, map_index=-1, try_number=1
    )
    assert external in second  # names the id to look the task up by
    records = matrix.deployment.state_store(FAILING_DAG_ID, task_id)
    assert len(records) == 1, records
    value = records[0][1]
    record = json.loads(value) if isinstance(value, str) else value
    assert record["kling_task_id"] is None
    assert record["external_task_id"] == external
    assert re.fullmatch(r"[0-9a-f]{64}", record["request_sha256"])  # the request the submit was for


def test_state_store_write_failure_fails_before_paying(matrix: Matrix) -> None:
    """Row: the task state store write fails before the submit -> no submit without a record."""
    task_id = "state_store_write_fails"
    assert matrix.instances[task_id] == ("failed", 2), matrix.diagnostics()
    assert matrix.paid(task_id) == 0
    files = matrix.logs[task_id]
    for attempt in (1, 2):
        log = try_logs(files, attempt)
        assert "Injected fault: the write of 'kling_task' to the task state store fails" in log
        # The provider says what it means (nothing paid) and keeps the store's own error as the cause.
        assert "nothing was submitted and nothing is billed" in log, log[-3000:]
        assert re.search(r'"exc_type": ?"AirflowRuntimeError"', log), log[-3000:]
        assert STORE_FAILURE_MESSAGE in log, log[-3000:]
    assert matrix.deployment.state_store(FAILING_DAG_ID, task_id) == []


def test_triggerer_sigkilled_mid_poll_the_wait_resumes_once(matrix: Matrix) -> None:
    """Row: triggerer killed (SIGKILL) mid-poll and started again -> resumes and succeeds; one event."""
    task_id = "survives_triggerer_kill"
    kill = matrix.triggerer_kill
    assert matrix.instances[task_id] == ("success", 1), matrix.diagnostics()  # no retry was needed
    assert matrix.paid(task_id) == 1
    assert len(kill["pids"]) >= 2  # the triggerer and its trigger runner
    assert kill["in_flight_for"] < SLOW_ANSWER_SECONDS  # killed while a status answer was in flight
    assert kill["old_triggerer"] in kill["old_jobs"]
    assert kill["new_job"] not in kill["old_jobs"]
    kling_task_id = matrix.kling_task_id(task_id)
    files = matrix.logs[task_id]
    old = trigger_logs(files, attempt=1)
    fired = {name: count(r"Trigger fired event", [text]) for name, text in old.items()}
    # Exactly one event, fired by the new triggerer; the old one polled and died without an event.
    assert fired == {
        f"attempt=1.log.trigger.{kill['old_triggerer']}.log": 0,
        f"attempt=1.log.trigger.{kill['new_job']}.log": 1,
    }, fired
    assert kling_task_id in old[f"attempt=1.log.trigger.{kill['old_triggerer']}.log"]
    # execute_complete ran once, in the one try.
    assert count(rf"Kling task {kling_task_id} succeeded", [try_logs(files, 1)]) == 1
    assert set(files) == set(old) | {"attempt=1.log"}


def test_api_outage_of_many_poll_intervals_is_ridden_out(matrix: Matrix) -> None:
    """Row: API outage for several poll intervals during a deferred wait -> ridden out within the timeout."""
    task_id = "rides_out_api_outage"
    outage = matrix.outage
    assert outage["seconds"] >= OUTAGE_SECONDS >= 10 * POLL_SECONDS
    assert outage["fired"].get("status:reset") == OUTAGE_RESETS, outage
    assert outage["fired"].get("status:server_error", 0) >= 5, outage
    # Still waiting, in its first try, through the outage and after it.
    assert outage["instances_right_after"][task_id] == ("deferred", 1), outage
    assert outage["instances_after_recovery"][task_id] == ("deferred", 1), outage
    assert matrix.instances[task_id] == ("success", 1), matrix.diagnostics()
    assert matrix.paid(task_id) == 1
    kling_task_id = matrix.kling_task_id(task_id)
    files = matrix.logs[task_id]
    assert count(rf"Kling task {kling_task_id} succeeded", [try_logs(files, 1)]) == 1


def test_wait_timeout_names_the_task_and_the_retry_reattaches(matrix: Matrix) -> None:
    """Row: wait timeout -> clear timeout error naming the Kling task id; the retry reattaches to it."""
    task_id = "wait_times_out"
    assert matrix.instances[task_id] == ("success", 2), matrix.diagnostics()
    assert matrix.paid(task_id) == 1
    assert len(matrix.paid_by_try(task_id, 1)) == 1
    assert matrix.paid_by_try(task_id, 2) == []
    kling_task_id = matrix.kling_task_id(task_id)
    files = matrix.logs[task_id]
    first, second = try_logs(files, 1), try_logs(files, 2)
    assert "KlingTaskTimeoutError" in first, first[-3000:]
    assert re.search(
        rf"Kling task {kling_task_id} did not finish within {SHORT_TIMEOUT:g} s \(last status Running\)",
        first,
    ), first[-3000:]
    assert re.search(rf"Reattaching to Kling task {kling_task_id} of an earlier try: it is Running", second)
    assert count(rf"Kling task {kling_task_id} succeeded", [second]) == 1
