"""
Issue 10's operator items in a real ``airflow dags test`` run (the task SDK supervisor: retries, the task
state store, unmapping and deferral as on a worker): a retry returns the video of its own request,
``execution_timeout`` bounds a deferred wait, what can never pass fails at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dags.test_kling_dags import airflow, airflow_env, kling_conn

from airflow_provider_kling.testing import KlingSimulator

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAG_FILES = Path(__file__).parent / "dag_files"
DAG_ID = "kling_operator_semantics"


@pytest.fixture(scope="module")
def slow_simulator() -> Iterator[KlingSimulator]:
    with KlingSimulator(task_seconds=6.0) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def semantics_run(
    tmp_path_factory: pytest.TempPathFactory,
    _kling_simulator_session: KlingSimulator,
    slow_simulator: KlingSimulator,
) -> dict[str, Any]:
    simulator = _kling_simulator_session
    simulator.reset()
    simulator.task_seconds = 1.0
    home = tmp_path_factory.mktemp("operator-semantics")
    env = airflow_env(
        home, {"kling_default": kling_conn(simulator), "kling_slow": kling_conn(slow_simulator)}
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILES)
    migrated = airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    ran = airflow(env, "dags", "test", DAG_ID, timeout=420)
    log = ran.stdout + ran.stderr
    (home / "dags-test.log").write_text(log)
    with sqlite3.connect(home / "airflow.db") as db:
        instances = {
            (task_id, map_index): (state, try_number, start, end)
            for task_id, map_index, state, try_number, start, end in db.execute(
                "SELECT task_id, map_index, state, try_number, julianday(start_date), julianday(end_date)"
                " FROM task_instance WHERE dag_id = ?",
                (DAG_ID,),
            )
        }
        xcoms = {
            (task_id, map_index): json.loads(value)
            for task_id, map_index, value in db.execute(
                "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND key = 'return_value'",
                (DAG_ID,),
            )
        }
    bodies = [*simulator.submitted]
    tasks = {task.task_id: task for task in simulator.tasks}
    result = {
        "log": log,
        "instances": instances,
        "xcoms": xcoms,
        "bodies": bodies,
        "tasks": tasks,
        "slow_bodies": [*slow_simulator.submitted],
    }
    simulator.reset()
    return result


def state(run: dict[str, Any], task_id: str, map_index: int = -1) -> tuple[str, int]:
    found = run["instances"][(task_id, map_index)]
    return found[0], found[1]


def prompt_of(run: dict[str, Any], task_id: str, map_index: int = -1) -> str:
    kling_task_id = run["xcoms"][(task_id, map_index)]["kling_task_id"]
    return str(run["tasks"][kling_task_id].request["input"]["prompt"])


def test_a_retry_whose_request_changed_returns_the_video_of_its_own_request(
    semantics_run: dict[str, Any],
) -> None:
    assert state(semantics_run, "changes_request") == ("success", 2)
    assert prompt_of(semantics_run, "changes_request") == "a harbour at night, take 2"
    prompts = Counter(body["input"]["prompt"] for body in semantics_run["bodies"])
    assert prompts["a harbour at night, take 1"] == 1  # paid by try 1, abandoned
    assert prompts["a harbour at night, take 2"] == 1
    assert "ABANDONED" in semantics_run["log"]


def test_a_retry_with_the_same_request_reattaches_and_pays_once(semantics_run: dict[str, Any]) -> None:
    assert state(semantics_run, "same_request") == ("success", 2)
    prompts = Counter(body["input"]["prompt"] for body in semantics_run["bodies"])
    assert prompts["the same request on every try"] == 1


def test_a_mapped_retry_whose_request_changed_gets_its_own_video(semantics_run: dict[str, Any]) -> None:
    for map_index, prompt in enumerate(["mapped a", "mapped b"]):
        assert state(semantics_run, "mapped_changes", map_index) == ("success", 2)
        kling_task_id = semantics_run["xcoms"][("mapped_changes", map_index)]["kling_task_id"]
        request = semantics_run["tasks"][kling_task_id].request
        assert request["input"]["prompt"] == prompt
        assert request["input"]["negative_prompt"] == "blur, take 2"


def test_execution_timeout_bounds_a_deferred_wait_and_the_retry_reattaches(
    semantics_run: dict[str, Any],
) -> None:
    assert state(semantics_run, "execution_timeout") == ("success", 2)
    assert len(semantics_run["slow_bodies"]) == 1  # the retry reattached to the paid task
    assert "did not finish within" in semantics_run["log"]


def test_an_invalid_mapped_value_fails_at_once_and_the_others_run(semantics_run: dict[str, Any]) -> None:
    assert state(semantics_run, "mapped_invalid", 0) == ("success", 1)
    assert state(semantics_run, "mapped_invalid", 1) == ("failed", 1)  # retries=2, none used
    assert "R2 input.prompt" in semantics_run["log"]


def test_a_request_given_as_json_text_is_submitted(semantics_run: dict[str, Any]) -> None:
    assert state(semantics_run, "json_text_request") == ("success", 1)
    body = next(
        b for b in semantics_run["bodies"] if b["input"]["prompt"] == "kling_operator_semantics as JSON text"
    )
    assert body["parameters"]["watermark_enabled"] is False
