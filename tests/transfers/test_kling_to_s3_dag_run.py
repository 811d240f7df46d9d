"""
KlingToS3Operator's contract with Airflow (issue 10, items 4, 6 and 7) in one real ``airflow dags test`` run.

``airflow dags test`` runs each task through the task SDK's supervisor, with retries and the outlet events
of a successful try recorded in the metadata database (table ``asset_event``), as on a worker. The DAG is
``dag_files/kling_transfer_semantics.py``; each test reads one case's outcome back from the run's SQLite
database, its log, the simulators and the local S3 server.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from dags.test_kling_dags import airflow, airflow_env, kling_conn

from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.testing import KlingSimulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing.s3 import LocalS3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAG_FILES = Path(__file__).parent / "dag_files"
DAG_ID = "kling_transfer_semantics"
BUCKET = "kling-tests"
PROMPT = "一只猫在冲浪, golden hour"
CASES = ("ok", "failed", "expired", "exists", "keycheck", "slow")


def submit(sim: KlingSimulator, prompt: str) -> str:
    """Create a task on ``sim`` over its API; return its id."""
    body = KlingVideoRequest.build(prompt=prompt, aspect_ratio="16:9").to_api_body()
    answer = httpx.post(
        f"{sim.base_url}/v1/tasks/submit", json=body, headers={"Authorization": sim.api_key}, timeout=10
    )
    answer.raise_for_status()
    return str(answer.json()["output"]["task_id"])


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, KlingSimulator]]:
    sims = {case: KlingSimulator(task_seconds=0.2).start() for case in CASES}
    try:
        yield sims
    finally:
        for sim in sims.values():
            sim.stop()


@pytest.fixture(scope="module")
def semantics_run(
    tmp_path_factory: pytest.TempPathFactory, simulators: dict[str, KlingSimulator], local_s3: LocalS3Server
) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("transfer-semantics")
    prefix = f"semantics-{int(time.time() * 1000)}/"
    simulators["failed"].fail_next_tasks(1, "content moderation: the prompt was refused")
    simulators["slow"].task_seconds = 60  # still running when the copy's first try looks
    kling_task_ids = {case: submit(sim, f"{case} video") for case, sim in simulators.items()}
    for case, sim in simulators.items():
        if case != "slow":
            sim.advance_time(5)
    simulators["expired"].advance_time(25 * 3600)  # past the result URLs' 24 hours
    s3 = local_s3.client()
    s3.put_object(  # someone else's video where copy_key_exists would land
        Bucket=BUCKET,
        Key=f"{prefix}copy_key_exists/0.mp4",
        Body=b"another task's video",
        Metadata={"kling-task-id": "another-task"},
    )
    s3.close()
    env = airflow_env(
        home,
        {
            **{f"kling_{case}": kling_conn(sim) for case, sim in simulators.items()},
            "aws_default": local_s3.airflow_connection_json(),
        },
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILES)
    migrated = airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    started = time.monotonic()
    conf = json.dumps({"s3_prefix": prefix, **kling_task_ids})
    ran = airflow(env, "dags", "test", DAG_ID, "--conf", conf, timeout=300)
    seconds = time.monotonic() - started
    log = ran.stdout + ran.stderr
    (home / "dags-test.log").write_text(log)
    with sqlite3.connect(home / "airflow.db") as db:
        instances = {
            task_id: (state, try_number)
            for task_id, state, try_number in db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (DAG_ID,)
            )
        }
        events = [
            {"task_id": task_id, "uri": uri, "extra": json.loads(extra)}
            for task_id, uri, extra in db.execute(
                "SELECT e.source_task_id, a.uri, e.extra FROM asset_event e "
                "JOIN asset a ON a.id = e.asset_id WHERE e.source_dag_id = ? ORDER BY e.id",
                (DAG_ID,),
            )
        ]
        xcoms = {
            task_id: json.loads(value)
            for task_id, value in db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'", (DAG_ID,)
            )
        }
    return {
        "log": log,
        "instances": instances,
        "events": events,
        "xcoms": xcoms,
        "prefix": prefix,
        "seconds": seconds,
        "kling_task_ids": kling_task_ids,
    }


def test_the_run_is_quick(semantics_run: dict[str, Any]) -> None:
    assert semantics_run["seconds"] < 90, semantics_run["log"][-3000:]


# -- item 4: what can never pass fails in its first try, despite retries=2 ----------------------------------


@pytest.mark.parametrize(
    ("task_id", "says"),
    [
        ("copy_failed_task", "content moderation: the prompt was refused"),
        ("copy_expired", "has expired (HTTP 403)"),
        ("copy_key_exists", "already exists"),
        ("copy_empty_task_id", "kling_task_id: '' is not a valid Kling task id"),
    ],
)
def test_what_can_never_pass_fails_in_its_first_try(
    semantics_run: dict[str, Any], task_id: str, says: str
) -> None:
    assert semantics_run["instances"][task_id] == ("failed", 1), semantics_run["log"][-3000:]
    assert says in semantics_run["log"]


def test_another_tasks_object_at_the_key_is_refused_before_any_download(
    semantics_run: dict[str, Any], simulators: dict[str, KlingSimulator], s3_client: S3Client
) -> None:
    assert simulators["exists"].requests["result"] == 0
    key = f"{semantics_run['prefix']}copy_key_exists/0.mp4"
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"another task's video"


def test_a_task_still_running_is_retried_and_the_retry_lands_it(semantics_run: dict[str, Any]) -> None:
    assert semantics_run["instances"]["copy_not_ready"] == ("success", 2)
    assert "is Running, not Success" in semantics_run["log"]


# -- item 7: keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "says"),
    [
        ("copy_leading_slash", "it starts with '/'"),
        ("copy_double_slash", "it has an empty, '.' or '..' segment"),
        ("copy_empty_key", "it is empty"),
    ],
)
def test_a_key_that_would_land_elsewhere_fails_in_its_first_try(
    semantics_run: dict[str, Any], task_id: str, says: str
) -> None:
    assert semantics_run["instances"][task_id] == ("failed", 1)
    assert says in semantics_run["log"]


def test_keys_are_checked_before_any_download(
    semantics_run: dict[str, Any], simulators: dict[str, KlingSimulator], s3_client: S3Client
) -> None:
    assert simulators["keycheck"].requests["result"] == 0
    for prefix in (semantics_run["prefix"], "/" + semantics_run["prefix"]):
        listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        assert not [item["Key"] for item in listed if "slash" in item["Key"] or "empty" in item["Key"]]


# -- item 6: Asset event extra holds the rendered values --------------------------------------------------


def test_unicode_metadata_reaches_the_asset_event_as_unicode(semantics_run: dict[str, Any]) -> None:
    (event,) = [event for event in semantics_run["events"] if event["task_id"] == "copy_unicode"]
    assert event["uri"] == f"s3://{BUCKET}/{semantics_run['prefix']}shared/0.mp4"
    assert event["extra"]["prompt"] == PROMPT
    assert event["extra"]["n"] == "3"
    assert event["extra"]["kling-task-id"] == semantics_run["kling_task_ids"]["ok"]
    assert event["extra"]["checksum"]
    assert event["extra"]["skipped"] is False


def test_s3_holds_the_encoded_values(semantics_run: dict[str, Any], s3_client: S3Client) -> None:
    head = s3_client.head_object(Bucket=BUCKET, Key=f"{semantics_run['prefix']}shared/0.mp4")
    assert head["Metadata"]["prompt"].startswith("=?UTF-8?B?")


# -- item 7: a skipped copy ------------------------------------------------------------------------------


def test_a_second_copy_of_the_same_video_is_skipped_and_emits_no_event(semantics_run: dict[str, Any]) -> None:
    assert semantics_run["instances"]["copy_again"] == ("success", 1)
    assert [event["task_id"] for event in semantics_run["events"]].count("copy_again") == 0
    uri = f"s3://{BUCKET}/{semantics_run['prefix']}shared/0.mp4"
    assert semantics_run["xcoms"]["copy_again"] == [uri]  # the return value stays complete
    assert "it was landed and announced by another task instance" in semantics_run["log"]


def test_the_skipped_objects_checksum_is_read_back(semantics_run: dict[str, Any]) -> None:
    (event,) = [event for event in semantics_run["events"] if event["task_id"] == "copy_unicode"]
    checksum = event["extra"]["checksum"]
    assert re.search(
        rf"already holds this \d+-byte video \(checksum {re.escape(checksum)}\)", semantics_run["log"]
    )


def test_objects_a_failed_try_landed_are_announced_by_the_retry(semantics_run: dict[str, Any]) -> None:
    assert semantics_run["instances"]["copy_retried"] == ("success", 2)
    (event,) = [event for event in semantics_run["events"] if event["task_id"] == "copy_retried"]
    assert event["extra"]["skipped"] is True
    assert event["extra"]["checksum"]  # read back from S3 (ChecksumMode)
