"""
Forty videos through killed processes (issue 12 item 2), in the distributed Airflow of ``conftest.py``:
PostgreSQL, the CeleryExecutor with a Redis broker of its own, two Celery workers (2 slots each), two
triggerers.

One DAG run (``dag_files/kling_scale.py``) maps 40 prompts through submit -> deferred wait ->
``KlingToS3Operator``, against a simulator that admits 5 tasks at once (``006001094`` beyond) and a ``kling``
pool of 5 that counts deferred tasks. While it runs, the module fixture ``scale_run`` injects, in order:

1. **A triggerer dies holding triggers**: once :data:`TRIGGERER_KILL_AFTER_VIDEOS` videos are done, at a
   moment when every held video's wait is deferred, the triggerer holding most of the run's triggers is
   ``SIGKILL``\\ ed (with its trigger-runner child); the held videos finish at once. The other triggerer
   must take the orphaned triggers over (after ``triggerer_health_check_threshold``) and fire them.
2. **A Celery worker dies right after a submit**: try 1 of map index :data:`PAUSE_MAP_INDEX` pauses right
   after its Kling task id is recorded in the task state store (the DAG file marks the moment); the test
   ``SIGKILL``\\ s the whole worker running it (main process, pool processes, supervisors, task processes),
   once no other try is inside its submit (new submits are held back first: a try killed mid-submit is,
   by design, never resubmitted, so the kill would cost the run a video).
   The scheduler fails the try when its heartbeat stops; the retry runs on the other worker and reattaches.
3. **The broker is down for 10 s**: once :data:`BROKER_STOP_AFTER_VIDEOS` videos are done, right after a
   clock step (when resumed tasks are about to be queued), the broker is stopped by its pid (everything
   queued in it is lost: no persistence) and started again, empty, on the same port, 10 s later.

Then each test asserts one promise on what the run left: 40 byte-exact videos, one object each; 40 paid
tasks; every try's outcome explained by the logs; nothing stuck; and, last, nothing left running.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from airflow_provider_kling.testing.simulator import result_video

from ._support import (
    ClockGate,
    ExecutorExits,
    TaskInstanceRow,
    TriggererLoad,
    drive_run,
    open_submits,
    task_instances,
    triggers_by_job,
)
from .conftest import ARTIFACTS, HELD_TASK_SECONDS
from .dag_files.kling_scale import ASPECT_RATIO, DAG_ID, PROMPTS, VIDEOS

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_stack import AirflowStack

    from .conftest import ScaleEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(1500)]

RUN_ID = "scale_forty"
#: The map index whose first try pauses right after its submit was recorded (its worker is killed then).
PAUSE_MAP_INDEX = 12
TRIGGERER_KILL_AFTER_VIDEOS = 5
BROKER_STOP_AFTER_VIDEOS = 25
BROKER_DOWN_SECONDS = 10.0
#: After holding new submits back, how long the test lets the begun ones write their "submit begins" record.
SUBMIT_SETTLE_SECONDS = 2.0
RUN_TIMEOUT = 1200.0
#: Scheduler log lines that end a try without the task's say (they name the task instance).
TRY_ENDINGS = (
    "Detected a task instance without a heartbeat",
    "but the task instance's state attribute is",
    "stuck in queued tries exceeded",
)


@dataclass
class Faults:
    """What the test injected, and what it saw happen, in seconds since the run was triggered."""

    started: float
    timeline: dict[str, float] = field(default_factory=dict)
    triggerer_kill: dict[str, Any] = field(default_factory=dict)
    worker_kill: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)
    #: ``(pid, create time)`` of every process any component had at any sample (none may be left; the
    #: create time tells a process from a later one that reused its pid).
    processes_seen: set[tuple[int, float]] = field(default_factory=set)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def mark(self, event: str) -> None:
        self.timeline[event] = self.now()
        print(f"[scale] t={self.timeline[event]:>6} s  {event}", flush=True)


class FaultInjector:
    """Called every tick of the run (``drive_run``'s ``on_tick``): samples the load and injects the faults."""

    def __init__(self, environment: ScaleEnvironment, gate: ClockGate, marker_dir: Path) -> None:
        self.stack = environment.stack
        assert self.stack.database is not None
        self.database = self.stack.database
        self.gate = gate
        self.marker = marker_dir / f"paused-{PAUSE_MAP_INDEX}"
        #: While this file exists, every try waits before it records that a submit begins (the DAG's
        #: ``HoldSubmits``); ``hold_since`` is when the test wrote it.
        self.hold = marker_dir / "hold-submits"
        self.hold_since: float | None = None
        self.faults = Faults(started=time.monotonic())
        self.load = TriggererLoad()
        self.orphans: set[int] = set()
        self.simulator_port = int(environment.simulator.base_url.rsplit(":", 1)[1])
        self.steps_seen = 0

    def __call__(self, instances: list[TaskInstanceRow]) -> None:
        # ``land`` is expanded once every ``generate`` is done: progress is counted in finished videos.
        videos = sum(1 for ti in instances if ti.task_id == "generate" and ti.state == "success")
        triggers = triggers_by_job(self.database, DAG_ID, RUN_ID)
        self.load.sample(self.stack, Counter(job for job in triggers.values() if job is not None))
        self.faults.processes_seen.update(_identities(self.stack))
        if not self.faults.triggerer_kill and videos >= TRIGGERER_KILL_AFTER_VIDEOS:
            self._kill_a_triggerer(instances, triggers)
        self._watch_orphans(triggers)
        if not self.faults.worker_kill and self.marker.exists():
            self._kill_the_paused_worker(instances)
        self._restart_the_killed_worker(instances)
        self._cycle_the_broker(videos)

    def _kill_a_triggerer(self, instances: list[TaskInstanceRow], triggers: dict[int, int | None]) -> None:
        if not self.gate.ready(instances):
            return  # kill only while every held video's wait is safely deferred
        port = self.simulator_port
        holders = [
            process
            for process in self.stack.processes
            if process.name.startswith("triggerer") and _talks_to(process.tree(), port)
        ]
        if not holders:
            return  # the triggers have not polled yet
        victim = holders[0].name
        pids = self.stack.kill(victim)
        self.stack.forget(victim)
        self.faults.triggerer_kill = {
            "heartbeat_threshold_s": float(
                self.stack.env()["AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"]
            ),
            "triggerer": victim,
            "pids": pids,
            "triggers_then": dict(triggers),
            "tries_then": {
                int(str(trigger_id)): (int(str(map_index)), int(str(try_number)))
                for trigger_id, map_index, try_number in self.database.query(
                    "SELECT trigger_id, map_index, try_number FROM task_instance "
                    "WHERE dag_id = %s AND run_id = %s AND trigger_id IS NOT NULL",
                    DAG_ID,
                    RUN_ID,
                )
            },
            "at": self.faults.now(),
            "wall_clock": datetime.now(UTC),
        }
        self.faults.mark(f"SIGKILL {victim}, polling the simulator for some of triggers {sorted(triggers)}")

    def _watch_orphans(self, triggers: dict[int, int | None]) -> None:
        """Find the dead triggerer's job (its heartbeat stopped), then note when its triggers moved on."""
        kill = self.faults.triggerer_kill
        if not kill or "all_taken_over_at" in kill:
            return
        if "job_id" not in kill:
            # The dead triggerer's job is the one that never beat again after the kill, once the other has:
            # "stale by a few seconds" is not enough, a live triggerer on a loaded machine lags that much.
            beats = self.database.query(
                "SELECT id, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' AND state = 'running'"
            )
            if len(beats) < 2 or not all(isinstance(beat, datetime) for _, beat in beats):
                return
            silent = [job for job, beat in beats if isinstance(beat, datetime) and beat < kill["wall_clock"]]
            if len(silent) != 1:
                return
            kill["job_id"] = int(str(silent[0]))
            kill["triggers_held"] = sorted(
                t for t, job in kill["triggers_then"].items() if job == kill["job_id"]
            )
            self.orphans = set(kill["triggers_held"])
        # An orphan is taken over once a triggerer logs starting it after the kill.
        taken = {tid for tid in self.orphans if self._started_elsewhere(tid, kill["tries_then"][tid])}
        for tid in taken:
            kill.setdefault("taken_over_at", {})[tid] = self.faults.now()
        self.orphans -= taken
        if not self.orphans:
            kill["all_taken_over_at"] = self.faults.now()
            self.faults.mark(f"the other triggerer took over and ran triggers {kill['triggers_held']}")

    def _started_elsewhere(self, trigger_id: int, map_index_and_try: tuple[int, int]) -> bool:
        """Whether a triggerer logged starting the trigger after the kill (the dead one cannot have).

        The trigger log files' job-id suffix is not evidence: it is read from the database when the file
        is opened and can be stale, so the time of the line is what counts.
        """
        map_index, try_number = map_index_and_try
        folder = (
            self.stack.home / f"logs/dag_id={DAG_ID}/run_id={RUN_ID}/task_id=generate/map_index={map_index}"
        )
        killed_at = self.faults.triggerer_kill["wall_clock"]
        for path in folder.glob(f"attempt={try_number}.log.trigger.*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if f"(ID {trigger_id}) starting" in line:
                    started = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
                    if started > killed_at:
                        return True
        return False

    def _kill_the_paused_worker(self, instances: list[TaskInstanceRow]) -> None:
        # The whole worker dies, its other slot too, and a try killed inside its submit is never resubmitted
        # (its task may exist): hold new submits back, let begun ones settle, kill only when none is open.
        if self.hold_since is None:
            self.hold.write_text("held while the test kills a worker")
            self.hold_since = time.monotonic()
        if time.monotonic() - self.hold_since < SUBMIT_SETTLE_SECONDS:
            return  # a try that passed the hold just before it appeared is still writing its record
        if open_submits(self.database, DAG_ID, RUN_ID):
            return  # another task is mid-submit: its worker might be this one; wait for a clean moment
        paused_pid = int(self.marker.read_text())
        workers = [p for p in self.stack.processes if p.name.startswith("celery-worker")]
        (victim,) = [p for p in workers if paused_pid in {proc.pid for proc in p.tree()}]
        pids = set(self.stack.kill(victim.name))
        self.stack.forget(victim.name)
        # A try that deferred on the dead worker while its Celery task was finishing has no exit to wait
        # for: the worker died before storing the result (observed). The gate must not wait for it.
        worker_log = self.stack.component_log(victim.name)
        for ti in task_instances(self.database, DAG_ID, RUN_ID):
            if ti.state == "deferred" and ti.external_executor_id and ti.external_executor_id in worker_log:
                self.gate.exempt.add((ti.task_id, ti.map_index, ti.try_number))
        collateral = sorted(
            (ti.task_id, ti.map_index, ti.try_number, ti.state)
            for ti in instances
            # TI.pid is the Celery pool process that ran it: only a try running now died with it.
            if ti.pid in pids and ti.state == "running" and ti.map_index != PAUSE_MAP_INDEX
        )
        self.faults.worker_kill = {
            "worker": victim.name,
            "pids": sorted(pids),
            "paused_pid": paused_pid,
            "other_tasks_on_it": collateral,
            "deferred_without_an_exit": sorted(self.gate.exempt),
            "at": self.faults.now(),
        }
        self.hold.unlink()
        self.faults.mark(f"SIGKILL {victim.name} ({len(pids)} processes) right after the submit of [12]")

    def _restart_the_killed_worker(self, instances: list[TaskInstanceRow]) -> None:
        """Once the paused task's retry has reattached elsewhere, start the dead worker again (as a
        process supervisor would), so the rest of the run has both workers."""
        kill = self.faults.worker_kill
        if not kill or "restarted_at" in kill:
            return
        paused = [ti for ti in instances if ti.task_id == "generate" and ti.map_index == PAUSE_MAP_INDEX]
        if paused and paused[0].try_number >= 2 and paused[0].state in ("deferred", "success"):
            self.stack.restart(kill["worker"])
            kill["restarted_at"] = self.faults.now()
            self.faults.mark(f"{kill['worker']} started again (the retry of [12] has reattached elsewhere)")

    def _cycle_the_broker(self, videos: int) -> None:
        broker = self.stack.broker
        assert broker is not None
        stepped, self.steps_seen = self.gate.steps > self.steps_seen, self.gate.steps
        if not self.faults.broker and videos >= BROKER_STOP_AFTER_VIDEOS and self.faults.worker_kill:
            if not stepped:
                return  # stop it right after a step: resumed tasks are about to be queued
            broker.stop()
            self.faults.broker = {"stopped_at": self.faults.now(), "port": broker.port}
            self.faults.mark(f"broker stopped (redis-server on 127.0.0.1:{broker.port})")
        elif (
            self.faults.broker
            and "started_at" not in self.faults.broker
            and self.faults.now() - self.faults.broker["stopped_at"] >= BROKER_DOWN_SECONDS
        ):
            broker.start()
            self.faults.broker["started_at"] = self.faults.now()
            self.faults.mark("broker started again, empty, on the same port")


@dataclass
class ScaleRun:
    """What the run left behind."""

    stack: AirflowStack
    state: str
    seconds: float
    instances: list[TaskInstanceRow]
    faults: Faults
    load: TriggererLoad
    clock_steps: int
    submitted: list[dict[str, Any]]
    kling_task_ids: list[str]
    stats: dict[str, Any]
    objects: dict[str, bytes]
    open_uploads: list[str]
    prefix: str
    #: ``{(task_id, map_index, try_number): log text}`` of every try that wrote a log.
    try_logs: dict[tuple[str, int, int], str]

    def summary(self) -> str:
        states = Counter((ti.task_id, ti.state, ti.try_number) for ti in self.instances)
        failed = {
            (ti.task_id, ti.map_index, ti.try_number): _last_error(
                self.try_logs.get((ti.task_id, ti.map_index, ti.try_number), "")
            )
            for ti in self.instances
            if ti.state == "failed"
        }
        return (
            f"{self.state} in {self.seconds:.0f} s; {dict(states)}; faults {self.faults.timeline}; "
            f"failed tries {failed}"
        )


def _last_error(log: str) -> str:
    """The last error (or, without one, the last line) a try logged, to say in a failure why it failed."""
    lines = [line for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if '"level":"error"' in line.replace(" ", "")]
    return (errors or lines or ["<no log>"])[-1][:600]


def _identities(stack: AirflowStack) -> set[tuple[int, float]]:
    """``(pid, create time)`` of every process of every component now."""
    found = set()
    for process in stack.processes:
        for proc in process.tree():
            with contextlib.suppress(psutil.Error):
                found.add((proc.pid, proc.create_time()))
    return found


def _talks_to(processes: list[psutil.Process], port: int) -> bool:
    """Whether one of the processes has a TCP connection open to ``port`` on 127.0.0.1."""
    for proc in processes:
        try:
            if any(conn.raddr and conn.raddr.port == port for conn in proc.net_connections(kind="tcp")):
                return True
        except psutil.Error:
            continue
    return False


def _try_logs(home: Path) -> dict[tuple[str, int, int], str]:
    logs = {}
    for path in home.glob(f"logs/dag_id={DAG_ID}/run_id={RUN_ID}/task_id=*/map_index=*/attempt=*.log"):
        match = re.fullmatch(r"task_id=(\w+)/map_index=(\d+)/attempt=(\d+)\.log", "/".join(path.parts[-3:]))
        if match:
            logs[(match[1], int(match[2]), int(match[3]))] = path.read_text(errors="replace")
    return logs


@pytest.fixture(scope="module")
def scale_run(scale_environment: ScaleEnvironment) -> ScaleRun:
    """Trigger the 40-video run, inject the three faults while it runs, and snapshot what it left."""
    stack, simulator = scale_environment.stack, scale_environment.simulator
    s3, bucket = scale_environment.backends.s3, scale_environment.backends.bucket
    prefix = f"scale-{uuid.uuid4().hex[:8]}/"
    marker_dir = ARTIFACTS / "markers"
    for stale in [*marker_dir.glob("paused-*"), *marker_dir.glob("hold-*")]:
        stale.unlink()
    simulator.reset()
    conf = {
        "s3_bucket": bucket,
        "s3_prefix": prefix,
        "pause_map_index": PAUSE_MAP_INDEX,
        "marker_dir": str(marker_dir),
    }
    exits = ExecutorExits(stack.component_log_dir / "scheduler.log", DAG_ID, RUN_ID)
    gate = ClockGate(simulator, exits, frozenset({"generate"}), HELD_TASK_SECONDS)
    stack.trigger(DAG_ID, run_id=RUN_ID, conf=conf)
    injector = FaultInjector(scale_environment, gate, marker_dir)
    state = drive_run(stack, gate, DAG_ID, RUN_ID, timeout=RUN_TIMEOUT, on_tick=injector)
    injector.faults.mark(f"run ended {state}")
    assert stack.database is not None
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    return ScaleRun(
        stack=stack,
        state=state,
        seconds=injector.faults.timeline[f"run ended {state}"],
        instances=task_instances(stack.database, DAG_ID, RUN_ID),
        faults=injector.faults,
        load=injector.load,
        clock_steps=gate.steps,
        submitted=simulator.submitted,
        kling_task_ids=[task.task_id for task in simulator.tasks if task.status == "Success"],
        stats=simulator.stats(),
        objects={
            item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listed.get("Contents", [])
        },
        open_uploads=[
            upload["Key"]
            for upload in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        ],
        prefix=prefix,
        try_logs=_try_logs(stack.home),
    )


def test_forty_videos_land_byte_exact_one_object_each(scale_run: ScaleRun) -> None:
    run = scale_run
    print(f"[scale] {run.summary()}")
    assert run.state == "success", run.summary()
    assert Counter((ti.task_id, ti.state) for ti in run.instances) == {
        ("generate", "success"): VIDEOS,
        ("land", "success"): VIDEOS,
    }, run.summary()
    assert set(run.objects) == {f"{run.prefix}{kling_task_id}/0.mp4" for kling_task_id in run.kling_task_ids}
    assert len(run.objects) == VIDEOS
    video = result_video(ASPECT_RATIO)
    assert all(body == video for body in run.objects.values())
    assert run.open_uploads == []


def test_the_simulator_counts_exactly_forty_paid_tasks(scale_run: ScaleRun) -> None:
    run = scale_run
    assert len(run.submitted) == VIDEOS, run.stats
    assert Counter(body["input"]["prompt"] for body in run.submitted) == dict.fromkeys(PROMPTS, 1)
    assert len(run.kling_task_ids) == VIDEOS
    assert run.stats["active_tasks_peak"] <= run.stats["settings"]["max_active_tasks"] == 5
    print(
        f"[scale] paid tasks {len(run.submitted)}; capacity refusals (006001094) "
        f"{run.stats['capacity_refusals']}; status queries {run.stats['requests']}"
    )


def test_the_orphaned_triggers_completed_on_the_other_triggerer(scale_run: ScaleRun) -> None:
    kill = scale_run.faults.triggerer_kill
    assert kill, "no triggerer was killed"
    assert kill["triggers_held"], kill
    assert "all_taken_over_at" in kill, f"orphaned triggers never picked up: {kill}"
    taken_after = kill["all_taken_over_at"] - kill["at"]
    print(f"[scale] triggerer kill: {kill}; all taken over {taken_after:.1f} s after the kill")
    # The wait of each orphaned trigger resumed in the same try: a triggerer's death costs no try.
    final_tries = {ti.map_index: ti.try_number for ti in scale_run.instances if ti.task_id == "generate"}
    orphaned = [kill["tries_then"][trigger_id] for trigger_id in kill["triggers_held"]]
    assert orphaned
    assert all(final_tries[map_index] == try_number for map_index, try_number in orphaned), orphaned


def test_the_killed_workers_task_retried_on_the_other_worker_and_reattached(scale_run: ScaleRun) -> None:
    run = scale_run
    kill = run.faults.worker_kill
    assert kill, "the paused task's worker was not killed"
    (paused,) = [ti for ti in run.instances if ti.task_id == "generate" and ti.map_index == PAUSE_MAP_INDEX]
    assert paused.state == "success"
    assert paused.try_number >= 2, "the killed try was retried"
    retry_log = run.try_logs[("generate", PAUSE_MAP_INDEX, paused.try_number)]
    assert re.search(r"Reattaching to Kling task \w+ of an earlier try", retry_log), retry_log[-3000:]
    survivor = next(
        p.name for p in run.stack.processes if p.name.startswith("celery-worker") and p.name != kill["worker"]
    )
    # The Celery task ids the scheduler gave [12], in order: try 1 (killed in its first execution), then
    # try 2's first execution (its reattach), then try 2's resume.
    celery_ids = re.findall(
        rf"Setting external_executor_id for <TaskInstance: {DAG_ID}\.generate {RUN_ID} "
        rf"map_index={PAUSE_MAP_INDEX} \[queued\][^>]*> to ([0-9a-f-]+)",
        run.stack.component_log("scheduler"),
    )
    assert len(celery_ids) >= 2, celery_ids
    assert f"execute_workload[{celery_ids[1]}] received" in run.stack.component_log(survivor), "ran elsewhere"
    print(f"[scale] worker kill: {kill}; retry try {paused.try_number} on {survivor} reattached")


def _try_endings(scheduler_log: str) -> dict[tuple[str, int], list[str]]:
    """The scheduler's lines that ended a try without the task's say, by task instance, in order."""
    endings: dict[tuple[str, int], list[str]] = {}
    for line in scheduler_log.splitlines():
        if not any(text in line for text in TRY_ENDINGS):
            continue
        for pattern in (
            rf"<TaskInstance: {DAG_ID}\.(\w+) {RUN_ID} map_index=(\d+) ",
            rf"task_id='(\w+)', dag_id='{DAG_ID}', run_id='{RUN_ID}', try_number=\d+, [^\n]*?map_index=(\d+)",
        ):
            if match := re.search(pattern, line):
                endings.setdefault((match[1], int(match[2])), []).append(line.strip()[:400])
                break
    return endings


def test_every_try_is_explained_by_the_logs(scale_run: ScaleRun) -> None:
    """
    Each try that was not the last is explained: by the fault the test injected into it, by errors in its own
    log, or else by the next of the scheduler's lines that ended a try of that task instance (a failed send
    to the broker, a heartbeat timeout), in order. The last try of every task instance says it succeeded.
    """
    run = scale_run
    endings = _try_endings(run.stack.component_log("scheduler"))
    kill = run.faults.worker_kill
    unexplained: list[tuple[str, int, int, list[str]]] = []
    explained: list[tuple[str, int, int, list[str]]] = []
    for ti in run.instances:
        final = run.try_logs.get((ti.task_id, ti.map_index, ti.try_number), "")
        assert ti.state == "success"
        if ti.task_id == "generate":
            assert re.search(r"Kling task \w+ succeeded in [\d.]+ s", final), (ti, final[-2000:])
        else:
            assert "Landed" in final or "nothing to do" in final or "s3://" in final, (ti, final[-2000:])
        scheduler_says = iter(endings.get((ti.task_id, ti.map_index), []))
        for try_number in range(1, ti.try_number):
            key = (ti.task_id, ti.map_index, try_number)
            reasons = []
            if key == ("generate", PAUSE_MAP_INDEX, 1):
                reasons.append(f"injected: paused after its submit, its worker {kill['worker']} SIGKILLed")
            if key[:2] in {(task, index) for task, index, tries, _ in kill.get("other_tasks_on_it", [])}:
                reasons.append(f"injected: its worker {kill['worker']} was SIGKILLed")
            own = run.try_logs.get(key, "")
            reasons += [
                line.strip()[:300]
                for line in own.splitlines()
                if re.search(r'"level":"(error|critical)"', line)
            ]
            reasons += [line for line in [next(scheduler_says, "")] if line]
            (explained if reasons else unexplained).append((ti.task_id, ti.map_index, try_number, reasons))
    for task_id, map_index, try_number, reasons in sorted(explained):
        print(f"[scale] {task_id}[{map_index}] try {try_number} ended: {' | '.join(reasons)[:600]}")
    assert not unexplained, unexplained
    assert explained, "the faults cost at least the killed worker's try"


def test_no_task_is_stuck(scale_run: ScaleRun) -> None:
    database = scale_run.stack.database
    assert database is not None
    assert {ti.state for ti in scale_run.instances} == {"success"}
    leftovers = database.query(
        "SELECT count(*) FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s",
        DAG_ID,
        RUN_ID,
    )
    assert leftovers == [(0,)]


def test_wall_time_and_triggerer_load(scale_run: ScaleRun) -> None:
    run = scale_run
    cpu = run.load.cpu_seconds()
    rss = {name: f"{size / 2**20:.0f} MiB" for name, size in run.load.rss_peak.items()}
    print(
        f"[scale] 40 videos in {run.seconds:.0f} s of wall time ({run.clock_steps} clock steps); "
        f"triggerer CPU seconds {cpu}; peak RSS {rss}; peak triggers per triggerer job "
        f"{dict(run.load.triggers_peak)}; timeline {run.faults.timeline}; broker {run.faults.broker}"
    )
    assert run.seconds < RUN_TIMEOUT
    assert max(run.load.triggers_peak.values()) <= 5, "the pool bounds the triggers too"


def test_nothing_is_left_running(scale_environment: ScaleEnvironment, scale_run: ScaleRun) -> None:
    """Last: the harness stops everything by its pids; no process, broker or database is left."""
    stack = scale_environment.stack
    assert stack.database is not None
    assert stack.broker is not None
    seen = scale_run.faults.processes_seen | _identities(stack)
    stack.stop()
    alive = []
    for pid, created in seen:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append((pid, proc.cmdline()))
    assert len(seen) >= 10, "the components and their children were sampled"
    assert alive == [], alive
    assert not stack.broker.ping()
    assert not stack.database.exists()
