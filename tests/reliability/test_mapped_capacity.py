"""
The fault matrix row "50 mapped tasks at once against a simulator that admits 5 at a time (006001094 beyond)":
all land; each paid once; the ``kling`` pool respected (issue 9). In the real Airflow of ``conftest.py``.

The DAG (``dag_files/kling_capacity.py``) maps ``KlingSubmitVideoOperator(wait_for_completion=True,
deferrable=True, pool="kling")`` over 50 prompts, then ``KlingToS3Operator`` over their results, against a
simulator of its own that admits :data:`CAPACITY` active tasks (a submit beyond: 429, vendor code
``006001094``, nothing created) and the local S3 server. The pool is created as the docs tell users to:
``airflow pools set kling 5 ... --include-deferred``.

**"Pool respected"** means: at no moment are more than :data:`POOL_SLOTS` ``generate`` instances of the run
``queued``, ``running`` or ``deferred`` (the states a pool that includes deferred tasks counts), sampled from
the metadata database every :data:`SAMPLE_SECONDS` for the whole run.

A mapped task holds its slot from before its submit until after its video finished, so the pool alone keeps
the run within the simulator's capacity: on its own the run would never meet a ``006001094``. So that the row
is exercised, a competing client (another API key of the simulator) holds every slot of the simulator when
the run starts, and frees them :data:`HOLD_AFTER_FIRST_REFUSAL` seconds after the first refusal: the first
submits are refused and must be retried by the hook (``Retry-After: 1``, within its budget of 5 retries),
creating nothing and paying once.

Videos are held (:data:`HELD_TASK_SECONDS`) and the test moves the simulator's clock in steps, each made only
when every active video's wait is deferred and its deferring worker's exit processed by the scheduler. Without
that, short videos lose a few of the 50 tries to an Airflow 3.3.2 race (a trigger that fires before the
scheduler processed its deferring worker's exit fails that try; see ``tests/e2e/conftest.py``), and the
aftermath of that race (a stale resume workload run as the retry) can fail the retry too: every try here
must be the first.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from dags.test_kling_realtime import AIRFLOW, query, wait_for

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.operators.kling import default_external_task_id
from airflow_provider_kling.testing import KlingSimulator
from airflow_provider_kling.testing.simulator import result_video

from .dag_files.kling_capacity import (
    ASPECT_RATIO,
    AWS_CONN_ID,
    DAG_ID,
    KLING_CONN_ID,
    POOL,
    PROMPTS,
    VIDEOS,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing.s3 import LocalS3Server
    from airflow_provider_kling.testing.simulator import SimulatedTask

    from ._support import ReliabilityDeployment

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

RUN_ID = "capacity_row"
#: How many tasks the simulator admits at once (Pending or Running), and the slots of the pool.
CAPACITY = 5
POOL_SLOTS = 5
#: How long a video takes (simulator seconds): "forever", until the test moves the clock. Kept well under
#: the results' lifetime (24 h) divided by the clock steps a run takes (at most one per video and one for
#: the competitor), so no result expires before it is landed.
HELD_TASK_SECONDS = 600.0
#: A clock step leaves a video younger than this (seconds) unfinished.
STEP_MARGIN = 0.5
#: The competing client: its own key and connection.
COMPETITOR_KEY = "sim-competitor-key"
COMPETITOR_CONN_ID = "kling_capacity_competitor"
#: Wall-clock seconds the competitor keeps the simulator full after the run's first refused submit.
HOLD_AFTER_FIRST_REFUSAL = 2.0
#: Seconds between two samples of the pool.
SAMPLE_SECONDS = 0.25
#: Bounds, in seconds.
STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 600.0
CLI_TIMEOUT = 120.0
#: The hook's log line of a retried submit (``KlingHook._next_delay``).
SUBMIT_RETRY = re.compile(r"Kling submit failed \([^\n]*006001094[^\n]*\); retry \d+ of \d+")
#: The scheduler's log line of a worker's exit (success: a deferral, or the end of a try).
EXECUTOR_SUCCESS = re.compile(
    r"Received executor event with state success for task instance TaskInstanceKey\("
    rf"dag_id='{DAG_ID}', task_id='generate', run_id='{RUN_ID}', try_number=(\d+), map_index=(\d+)\)"
)


@dataclass
class CapacityRun:
    """What the run left behind, snapshotted when it ended."""

    deployment: ReliabilityDeployment
    run_state: str | None
    #: ``{(task_id, map_index): (state, try_number)}``.
    instances: dict[tuple[str, int], tuple[str | None, int]]
    #: ``(slots, include_deferred)`` of the pool ``kling``, as Airflow stored it.
    pool: tuple[int, bool]
    #: The most ``generate`` instances queued, running or deferred at one sample, and the sample count.
    pool_peak: int
    samples: int
    #: The state counts of the sample with the most deferred ``generate`` instances.
    busiest: dict[str, int]
    submitted: list[dict[str, Any]]
    tasks: list[SimulatedTask]
    stats: dict[str, Any]
    #: Objects under the run's prefix: ``{key: body}``, and multipart uploads left open there.
    objects: dict[str, bytes]
    open_uploads: list[str]
    prefix: str
    #: The worker logs of ``generate``: ``{(map_index, try_number): text}``.
    generate_logs: dict[tuple[int, int], str]
    scheduler_log: str
    competitor_task_ids: list[str]
    #: How many times the test moved the clock to finish the run's videos.
    clock_steps: int
    timeline: dict[str, float] = field(default_factory=dict)

    def dag_tasks(self) -> list[SimulatedTask]:
        """The simulator's tasks made by the run (not by the competitor)."""
        return [task for task in self.tasks if task.task_id not in self.competitor_task_ids]

    def diagnostics(self) -> str:
        states = Counter(self.instances.values())
        return (
            f"run={self.run_state} instances={dict(states)} clock steps={self.clock_steps} "
            f"timeline={self.timeline} stats={self.summary()}"
        )

    def summary(self) -> dict[str, Any]:
        return {
            name: self.stats.get(name)
            for name in ("active_tasks", "active_tasks_peak", "capacity_refusals", "requests")
        }


def _cli(deployment: ReliabilityDeployment, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(AIRFLOW), *args],
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        try:
            output, _ = process.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
            raise
        assert process.returncode == 0, f"{process.args!r}:\n{output[-3000:]}"


def _connections_file(home: Path, simulator: KlingSimulator, local_s3: LocalS3Server) -> Path:
    aws = json.loads(local_s3.airflow_connection_json())
    aws["extra"] = json.dumps(aws["extra"])
    connections = {
        KLING_CONN_ID: {"conn_type": "kling", "host": simulator.base_url, "password": simulator.api_key},
        AWS_CONN_ID: aws,
    }
    path = home / "capacity-connections.json"
    path.write_text(json.dumps(connections))
    return path


class _ExecutorEvents:
    """The ``(map_index, try_number)`` of every ``generate`` worker exit the scheduler has processed."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0
        self.rest = b""
        self.seen: set[tuple[int, int]] = set()

    def update(self) -> set[tuple[int, int]]:
        """Read what the scheduler logged since the last call; return every exit seen so far."""
        with self.log.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        self.offset += len(chunk)
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            if match := EXECUTOR_SUCCESS.search(line.decode(errors="replace")):
                self.seen.add((int(match[2]), int(match[1])))
        return self.seen


def _clock_step(
    simulator: KlingSimulator,
    generate: dict[int, tuple[str, int, str | None]],
    exits: set[tuple[int, int]],
    map_index_of: dict[str, int],
) -> float | None:
    """
    How far to move the clock to finish the run's active videos (``None``: not now).

    Only when every active video is ready (its wait deferred, its deferring worker's exit processed) and no
    ``generate`` instance is queued or running its first execution (one that could submit while the step is
    made; a resumed one has a ``next_method``). The clock moves for every task at once: finishing some
    videos early but not others would leave the others only a second or two from their end, in real time.
    """
    active = [
        map_index_of[task.external_task_id]
        for task in simulator.tasks
        if task.external_task_id in map_index_of and task.status in ("Pending", "Running")
    ]
    if not active:
        return None
    if any(
        state in ("queued", "running") and next_method is None for state, _, next_method in generate.values()
    ):
        return None
    for index in active:
        state, try_number, _ = generate.get(index, (None, 0, None))
        if state != "deferred" or (index, try_number) not in exits:
            return None
    return HELD_TASK_SECONDS - STEP_MARGIN


@pytest.fixture(scope="module")
def capacity_simulator() -> Iterator[KlingSimulator]:
    """A simulator of this row's own: capacity :data:`CAPACITY`, and a second key for the competitor."""
    with KlingSimulator(
        task_seconds=HELD_TASK_SECONDS, max_active_tasks=CAPACITY, additional_api_keys=[COMPETITOR_KEY]
    ) as simulator:
        yield simulator


def _fill_the_simulator(simulator: KlingSimulator) -> list[str]:
    """Submit :data:`CAPACITY` (held) tasks with the competitor's key; return their ids."""
    connection = {"conn_type": "kling", "host": simulator.base_url, "password": COMPETITOR_KEY}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{COMPETITOR_CONN_ID.upper()}", json.dumps(connection))
        with KlingHook(COMPETITOR_CONN_ID, max_retries=0) as hook:
            task_ids = [
                hook.submit_task(
                    KlingVideoRequest.build(
                        prompt=f"a competitor's video {index}", aspect_ratio=ASPECT_RATIO, duration=5
                    )
                )
                for index in range(CAPACITY)
            ]
    assert simulator.stats()["active_tasks"] == CAPACITY
    return task_ids


@pytest.fixture(scope="module")
def capacity_run(
    reliability_airflow: ReliabilityDeployment, capacity_simulator: KlingSimulator, local_s3: LocalS3Server
) -> CapacityRun:
    """Create the pool and connections, fill the simulator, run the DAG; return what the run left."""
    deployment, simulator = reliability_airflow, capacity_simulator
    home = deployment.home
    bucket = local_s3.buckets[0]
    prefix = f"capacity-{uuid.uuid4().hex[:8]}/"
    _finish(
        [
            _cli(
                deployment, "pools", "set", POOL, str(POOL_SLOTS), "Kling video tasks", "--include-deferred"
            ),
            _cli(deployment, "connections", "import", str(_connections_file(home, simulator, local_s3))),
        ]
    )
    (pool,) = query(home, "SELECT slots, include_deferred FROM slot_pool WHERE pool = ?", POOL)
    wait_for(
        lambda: query(home, "SELECT 1 FROM dag WHERE dag_id = ? AND is_stale = 0", DAG_ID),
        timeout=STARTUP_TIMEOUT,
        what=f"the DAG processor to register {DAG_ID}",
        deployment=deployment,
    )
    simulator.reset()
    competitor_task_ids = _fill_the_simulator(simulator)

    conf = json.dumps({"s3_bucket": bucket, "s3_prefix": prefix})
    _finish([_cli(deployment, "dags", "trigger", DAG_ID, "--run-id", RUN_ID, "--conf", conf)])
    started = time.monotonic()
    timeline: dict[str, float] = {}

    def mark(name: str) -> None:
        timeline[name] = round(time.monotonic() - started, 1)

    pool_peak, samples = 0, 0
    busiest: dict[str, int] = {}
    first_refusal: float | None = None
    released = False
    clock_steps = 0
    seen = _ExecutorEvents(home / "scheduler.log")
    map_index_of = {
        default_external_task_id(
            dag_id=DAG_ID, run_id=RUN_ID, task_id="generate", map_index=index, try_number=try_number
        ): index
        for index in range(VIDEOS)
        for try_number in (1, 2)
    }
    deadline = started + RUN_TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"the run did not finish within {RUN_TIMEOUT:g} s: {timeline}"
        deployment.check_alive()
        generate = {
            index: (state, try_number, next_method)
            for index, state, try_number, next_method in query(
                home,
                "SELECT map_index, state, try_number, next_method FROM task_instance "
                "WHERE dag_id = ? AND run_id = ? AND task_id = ? AND pool = ?",
                DAG_ID,
                RUN_ID,
                "generate",
                POOL,
            )
        }
        states = Counter(state for state, _, _ in generate.values())
        samples += 1
        pool_peak = max(pool_peak, sum(states[state] for state in ("queued", "running", "deferred")))
        if states["deferred"] > busiest.get("deferred", -1):
            busiest = dict(states)
        if not released:
            # The competitor holds the simulator until the run's submits have been refused for a while.
            if first_refusal is None and simulator.stats()["capacity_refusals"]:
                first_refusal = time.monotonic()
                mark("first refused submit")
            if first_refusal is not None and time.monotonic() - first_refusal >= HOLD_AFTER_FIRST_REFUSAL:
                assert len(simulator.submitted) == CAPACITY, "a submit got through a full simulator"
                simulator.advance_time(HELD_TASK_SECONDS)  # the competitor's tasks end
                released = True
                mark("competitor's tasks ended")
        else:
            # Finish the run's videos whose wait is deferred and whose deferring worker's exit the scheduler
            # processed (then no trigger can fire before that: no resume race), and no other.
            step = _clock_step(simulator, generate, seen.update(), map_index_of)
            if step is not None:
                simulator.advance_time(step)
                clock_steps += 1
        if deployment.run_state(DAG_ID, RUN_ID) not in (None, "queued", "running"):
            break
        time.sleep(SAMPLE_SECONDS)
    mark("run finished")

    client: S3Client = local_s3.client()
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
        objects = {
            entry["Key"]: client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            for entry in listed.get("Contents", [])
        }
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    finally:
        client.close()
    return CapacityRun(
        deployment=deployment,
        run_state=deployment.run_state(DAG_ID, RUN_ID),
        instances={
            (task_id, map_index): (state, try_number)
            for task_id, map_index, state, try_number in query(
                home,
                "SELECT task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                DAG_ID,
                RUN_ID,
            )
        },
        pool=(pool[0], bool(pool[1])),
        pool_peak=pool_peak,
        samples=samples,
        busiest=busiest,
        submitted=simulator.submitted,
        tasks=simulator.tasks,
        stats=simulator.stats(),
        objects=objects,
        open_uploads=[upload["Key"] for upload in uploads],
        prefix=prefix,
        generate_logs={
            (int(match[1]), int(match[2])): path.read_text(errors="replace")
            for path in home.glob(f"logs/dag_id={DAG_ID}/run_id={RUN_ID}/task_id=generate/*/attempt=*.log")
            if (
                match := re.fullmatch(
                    r"map_index=(\d+)/attempt=(\d+)\.log", f"{path.parent.name}/{path.name}"
                )
            )
        },
        scheduler_log=deployment.log("scheduler"),
        competitor_task_ids=competitor_task_ids,
        clock_steps=clock_steps,
        timeline=timeline,
    )


def test_fifty_mapped_videos_all_land_byte_exact(capacity_run: CapacityRun) -> None:
    run = capacity_run
    print(f"capacity row: {run.diagnostics()}")
    assert run.run_state == "success", run.diagnostics()
    assert Counter((task_id, state) for (task_id, _), (state, _) in run.instances.items()) == {
        ("generate", "success"): VIDEOS,
        ("land", "success"): VIDEOS,
    }, run.diagnostics()
    # One object per video, at the key of its Kling task, byte for byte the simulator's video.
    expected_keys = {f"{run.prefix}{task.task_id}/0.mp4" for task in run.dag_tasks()}
    assert set(run.objects) == expected_keys
    video = result_video(ASPECT_RATIO)
    assert all(body == video for body in run.objects.values())
    assert run.open_uploads == []


def test_each_video_is_paid_once(capacity_run: CapacityRun) -> None:
    run = capacity_run
    dag_prompts = Counter(
        body["input"]["prompt"] for body in run.submitted if body["input"]["prompt"] in PROMPTS
    )
    assert dag_prompts == dict.fromkeys(PROMPTS, 1)
    # Nothing else was paid: the 50 videos and the competitor's 5 tasks.
    assert len(run.submitted) == VIDEOS + CAPACITY
    assert len(run.dag_tasks()) == VIDEOS
    assert {task.status for task in run.dag_tasks()} == {"Success"}
    # Each video was paid by the first try of its map index.
    assert {task.external_task_id for task in run.dag_tasks()} == {
        default_external_task_id(
            dag_id=DAG_ID, run_id=RUN_ID, task_id="generate", map_index=index, try_number=1
        )
        for index in range(VIDEOS)
    }


def test_every_task_succeeded_in_its_first_try(capacity_run: CapacityRun) -> None:
    """No try was lost: not to a refused submit, nor to the resume race (the clock steps keep it out)."""
    run = capacity_run
    assert {tries for _, tries in run.instances.values()} == {1}, run.diagnostics()
    assert not any("Reattaching" in text for text in run.generate_logs.values())
    assert set(run.generate_logs) == {(index, 1) for index in range(VIDEOS)}
    print(f"capacity row: {run.clock_steps} clock steps finished the 50 videos")


def test_the_simulator_never_ran_more_than_its_capacity_and_refusals_were_retried(
    capacity_run: CapacityRun,
) -> None:
    run = capacity_run
    stats = run.stats
    assert stats["active_tasks_peak"] <= CAPACITY, run.summary()
    assert stats["settings"]["max_active_tasks"] == CAPACITY
    refusals = stats["capacity_refusals"]
    # The competitor made the first submits meet a full simulator: each refusal (429, 006001094) was
    # retried by the hook with backoff, within the try: no try failed over it, and none created a task.
    assert refusals >= 1, run.summary()
    logs = list(run.generate_logs.values())
    assert sum(len(SUBMIT_RETRY.findall(text)) for text in logs) == refusals, run.summary()
    assert not any("KlingRateLimitError" in text for text in logs)
    print(f"capacity row: {refusals} capacity refusals (429, 006001094), all retried by the hook")
    print(f"capacity row: timeline (s after the trigger): {run.timeline}")


def test_the_kling_pool_is_respected(capacity_run: CapacityRun) -> None:
    run = capacity_run
    assert run.pool == (POOL_SLOTS, True)
    assert run.samples >= 20, run.samples
    assert run.pool_peak <= POOL_SLOTS, (run.pool_peak, run.busiest)
    # The pool was the limit, deferred tasks included: it was full while waits were deferred.
    assert run.pool_peak == POOL_SLOTS, (run.pool_peak, run.busiest)
    assert run.busiest.get("deferred", 0) >= 2, run.busiest
    print(
        f"capacity row: pool peak {run.pool_peak} of {POOL_SLOTS} over {run.samples} samples; "
        f"busiest sample {run.busiest}"
    )
