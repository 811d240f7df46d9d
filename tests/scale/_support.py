"""
Helpers of the scale tests: reading a run from the PostgreSQL metadata database, the scheduler's processed
worker exits, the gate that finishes held videos, and the triggerers' load.

**Why videos are held.** Airflow 3.3.2 loses a try when a trigger fires before the scheduler has processed
the executor's event of the worker exit that deferred it (see ``tests/e2e/conftest.py``). The simulator
therefore holds every video (``task_seconds`` of many minutes) and :class:`ClockGate` moves its clock, for
every active video at once, only when every deferred task's deferring exit has been processed and no
submitting task is in a first execution (which could be submitting right then).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from airflow_stack import AirflowStack
    from stack_services import PostgresDatabase

    from airflow_provider_kling.testing import KlingSimulator

#: A step leaves a video younger than this (simulator seconds) unfinished.
STEP_MARGIN = 0.5


@dataclass(frozen=True)
class TaskInstanceRow:
    """One task instance of a run, as the metadata database holds it."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    next_method: str | None
    pid: int | None
    external_executor_id: str | None


def task_instances(database: PostgresDatabase, dag_id: str, run_id: str) -> list[TaskInstanceRow]:
    """Every task instance of a run.

    :param database: the metadata database.
    :param dag_id: the DAG.
    :param run_id: the run.
    """
    rows = database.query(
        "SELECT task_id, map_index, state, try_number, next_method, pid, external_executor_id "
        "FROM task_instance WHERE dag_id = %s AND run_id = %s",
        dag_id,
        run_id,
    )
    return [TaskInstanceRow(*row) for row in rows]  # type: ignore[arg-type]


def open_submits(database: PostgresDatabase, dag_id: str, run_id: str) -> list[tuple[str, int]]:
    """``(task_id, map_index)`` of every ledger record saying "a submit began" without a task id yet.

    :param database: the metadata database.
    :param dag_id: the DAG.
    :param run_id: the run.
    """
    rows = database.query(
        "SELECT task_id, map_index, value FROM task_state_store "
        "WHERE dag_id = %s AND run_id = %s AND key = 'kling_task'",
        dag_id,
        run_id,
    )
    return [
        (str(task_id), int(str(map_index)))
        for task_id, map_index, value in rows
        if not json.loads(str(value)).get("kling_task_id")
    ]


class ExecutorExits:
    """
    The ``(task_id, map_index, try_number)`` of every worker exit (``success``) the scheduler has processed.

    :param log: the scheduler's log file.
    :param dag_id: the DAG.
    :param run_id: the run.
    """

    def __init__(self, log: Path, dag_id: str, run_id: str) -> None:
        self.log = log
        self.pattern = re.compile(
            r"Received executor event with state success for task instance TaskInstanceKey\("
            rf"dag_id='{re.escape(dag_id)}', task_id='([^']+)', run_id='{re.escape(run_id)}', "
            r"try_number=(\d+), map_index=(-?\d+)"
        )
        self.offset = 0
        self.rest = b""
        self.seen: set[tuple[str, int, int]] = set()

    def update(self) -> set[tuple[str, int, int]]:
        """Read what the scheduler logged since the last call; return every exit seen so far."""
        with self.log.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        self.offset += len(chunk)
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            if match := self.pattern.search(line.decode(errors="replace")):
                self.seen.add((match[1], int(match[3]), int(match[2])))
        return self.seen


@dataclass
class ClockGate:
    """
    Finishes the simulator's held videos when no trigger can fire too early (see the module docstring).

    :param simulator: the simulator holding the videos.
    :param exits: the scheduler's processed worker exits of the run.
    :param submitting_tasks: the task ids that submit videos.
    :param held_seconds: the simulator's ``task_seconds``.
    """

    simulator: KlingSimulator
    exits: ExecutorExits
    submitting_tasks: frozenset[str]
    held_seconds: float
    steps: int = 0
    #: Tries whose deferring exit will never be reported (their worker died): not waited for.
    exempt: set[tuple[str, int, int]] = field(default_factory=set)

    def ready(self, instances: Iterable[TaskInstanceRow]) -> bool:
        """Whether a step may be made now: a video is held, every deferred wait is safe, no submit runs.

        :param instances: the run's task instances, just read.
        """
        if not any(task.status in ("Pending", "Running") for task in self.simulator.tasks):
            return False
        seen = self.exits.update()
        deferred = 0
        for ti in instances:
            if ti.state == "deferred":
                deferred += 1
                key = (ti.task_id, ti.map_index, ti.try_number)
                if key not in seen and key not in self.exempt:
                    return False
            elif (
                ti.task_id in self.submitting_tasks
                and ti.state in ("queued", "running")
                and ti.next_method is None
            ):
                return False
        return deferred > 0

    def step(self) -> None:
        """Finish every active video (the simulator's clock moves for all tasks at once)."""
        self.simulator.advance_time(self.held_seconds - STEP_MARGIN)
        self.steps += 1


@dataclass
class TriggererLoad:
    """CPU seconds and peak RSS of each triggerer (with its trigger-runner child), sampled during a run."""

    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_last: dict[str, float] = field(default_factory=dict)
    rss_peak: dict[str, int] = field(default_factory=dict)
    #: The most triggers of the run one triggerer job held at one sample, by job id.
    triggers_peak: Counter[int] = field(default_factory=Counter)

    def sample(self, stack: AirflowStack, triggers_by_job: Counter[int]) -> None:
        """Take one sample of every running triggerer.

        :param stack: the deployment.
        :param triggers_by_job: how many of the run's triggers each triggerer job holds now.
        """
        for process in stack.processes:
            if not process.name.startswith("triggerer"):
                continue
            cpu, rss = 0.0, 0
            for proc in process.tree():
                try:
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.cpu_start.setdefault(process.name, cpu)
            self.cpu_last[process.name] = cpu
            self.rss_peak[process.name] = max(self.rss_peak.get(process.name, 0), rss)
        for job, count in triggers_by_job.items():
            self.triggers_peak[job] = max(self.triggers_peak[job], count)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each triggerer used between its first and its last sample."""
        return {name: round(self.cpu_last[name] - self.cpu_start[name], 2) for name in self.cpu_last}


def triggers_by_job(database: PostgresDatabase, dag_id: str, run_id: str) -> dict[int, int | None]:
    """``{trigger id: triggerer job id}`` of the run's deferred task instances.

    :param database: the metadata database.
    :param dag_id: the DAG.
    :param run_id: the run.
    """
    rows = database.query(
        "SELECT t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s",
        dag_id,
        run_id,
    )
    return {int(str(trigger_id)): (int(str(job)) if job is not None else None) for trigger_id, job in rows}


def wait_until(condition: Any, *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``condition()`` until it returns something true (bounded); return that.

    :param condition: a function of no argument.
    :param timeout: seconds.
    :param what: what is awaited, for the error.
    :param interval: seconds between two polls.
    :raises AssertionError: on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


def drive_run(
    stack: AirflowStack,
    gate: ClockGate,
    dag_id: str,
    run_id: str,
    *,
    timeout: float,
    on_tick: Any = None,
    tick_seconds: float = 0.5,
) -> str:
    """
    Drive a run to its end: each tick, read its task instances, call ``on_tick(instances)``, and finish the
    held videos when the gate allows; return the run's final state.

    :param stack: the deployment (a component that exits ends the wait with an error).
    :param gate: the clock gate of the run's simulator.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param timeout: seconds.
    :param on_tick: called with the task instances each tick (faults are injected there), or ``None``.
    :param tick_seconds: seconds between two ticks.
    :raises AssertionError: when the run does not end within ``timeout``.
    """
    assert stack.database is not None
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        instances = task_instances(stack.database, dag_id, run_id)
        if on_tick is not None:
            on_tick(instances)
        if gate.ready(instances):
            gate.step()
        (state,) = stack.database.query(
            "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id
        )[0]
        if state in ("success", "failed"):
            return str(state)
        if time.monotonic() >= deadline:
            states = Counter((ti.task_id, ti.state) for ti in instances)
            raise AssertionError(f"{run_id} did not end within {timeout:g} s: {dict(states)}")
        time.sleep(tick_seconds)
