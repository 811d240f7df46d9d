"""
The example DAGs on PostgreSQL and Celery (issue 12 item 3): the text-to-video and batch examples run green
in the distributed Airflow of ``conftest.py``, where XCom, trigger kwargs and the task state store are
PostgreSQL columns (``jsonb``, ``text``), not SQLite text.

Each example's video is held by the simulator until its wait is deferred and the scheduler has processed the
deferring worker's exit (``_support.ClockGate``), as in the SQLite e2e run.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kling.testing.simulator import result_video

from ._support import ClockGate, ExecutorExits, drive_run, task_instances
from .conftest import HELD_TASK_SECONDS

if TYPE_CHECKING:
    from .conftest import ScaleEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

#: example DAG -> (the task ids that submit, the task that lands, how many videos).
EXAMPLES = {
    "example_kling_text_to_video": (frozenset({"submit"}), "land_in_s3", 1),
    "example_kling_batch": (frozenset({"generate"}), "land_in_s3", 3),
}
RUN_TIMEOUT = 300.0


@pytest.mark.parametrize("dag_id", list(EXAMPLES))
def test_example_runs_green_on_postgres_and_celery(scale_environment: ScaleEnvironment, dag_id: str) -> None:
    stack, backends = scale_environment.stack, scale_environment.backends
    simulator = backends.simulator
    assert simulator is not None
    assert stack.database is not None
    submitting, landing, videos = EXAMPLES[dag_id]
    paid_before = len(simulator.submitted)

    run_id = stack.trigger(dag_id, run_id=f"postgres__{dag_id}")
    exits = ExecutorExits(stack.component_log_dir / "scheduler.log", dag_id, run_id)
    gate = ClockGate(simulator, exits, submitting, HELD_TASK_SECONDS)
    state = drive_run(stack, gate, dag_id, run_id, timeout=RUN_TIMEOUT)

    instances = task_instances(stack.database, dag_id, run_id)
    assert state == "success", Counter((ti.task_id, ti.state, ti.try_number) for ti in instances)
    assert {ti.try_number for ti in instances} == {1}, "every task in its first try"
    assert len(simulator.submitted) - paid_before == videos, "one paid task per video"
    uris = [
        uri
        for ti in instances
        if ti.task_id == landing
        for uri in stack.api.xcom(dag_id, run_id, landing, map_index=ti.map_index)
    ]
    assert len(uris) == videos
    for uri in uris:
        bucket, key = str(uri).removeprefix("s3://").split("/", 1)
        assert backends.s3.get_object(Bucket=bucket, Key=key)["Body"].read() == result_video(
            "16:9" if dag_id == "example_kling_text_to_video" else "9:16"
        )
    print(f"{dag_id} on PostgreSQL and Celery: {state}, {gate.steps} clock step(s), {len(uris)} video(s)")


def test_the_json_the_provider_stores_lives_in_postgres_columns(scale_environment: ScaleEnvironment) -> None:
    """XCom values are ``jsonb``; trigger kwargs and task state store values are ``text`` holding JSON."""
    database = scale_environment.stack.database
    assert database is not None
    types = {
        f"{table}.{column}": data_type
        for table, column, data_type in database.query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND (table_name, column_name) IN "
            "(('xcom', 'value'), ('trigger', 'kwargs'), ('task_state_store', 'value'))"
        )
    }
    print(f"PostgreSQL column types: {types}")
    assert types == {"xcom.value": "jsonb", "trigger.kwargs": "text", "task_state_store.value": "text"}
    # The examples' XComs were written and read back through those columns (the test above): a jsonb value
    # of the batch's finished-task dicts holds the Kling task id as a JSON string.
    rows = database.query(
        "SELECT value ->> 'kling_task_id' FROM xcom WHERE dag_id = 'example_kling_batch' "
        "AND task_id = 'generate' AND key = 'return_value'"
    )
    assert len(rows) == 3
    assert all(isinstance(kling_task_id, str) and kling_task_id for (kling_task_id,) in rows), rows
