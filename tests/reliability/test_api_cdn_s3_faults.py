"""
The fault matrix's API, CDN and S3 rows (issue 9), injected into one real ``airflow dags test`` run.

``airflow dags test`` runs every task through the task SDK's supervisor, with retries, the task state
store and deferral (each trigger inline, on an event loop): the operators, the trigger and the hook meet
the faults exactly as on a worker and a triggerer. One run, several simulators (one per fault family, each
behind its own connection), the local S3 server; each test reads one row's outcome back.
"""

from __future__ import annotations

import json
import sqlite3
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from dags.test_kling_dags import airflow, airflow_env, kling_conn

from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.testing import KlingSimulator
from airflow_provider_kling.testing.simulator import result_video

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing.s3 import LocalS3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILES = Path(__file__).parent / "api_fault_dags"
DAG_ID = "kling_api_faults"
VIDEO = result_video("16:9")
#: A distinctive key: any log or database text holding it has leaked it.
LEAKCHECK_KEY = "sk-faults-LEAKCHECK-2b7e41c9"


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, KlingSimulator]]:
    names = ("status_faults", "busy", "uncertain", "refusing", "cdn")
    sims = {name: KlingSimulator(api_key=LEAKCHECK_KEY, task_seconds=0.5).start() for name in names}
    try:
        yield sims
    finally:
        for sim in sims.values():
            sim.stop()


def load_faults(sims: dict[str, KlingSimulator]) -> None:
    status = sims["status_faults"]
    status.inject_fault("status", "rate_limit", retry_after=1)
    status.inject_fault("status", "rate_limit", retry_after=formatdate(usegmt=True))  # an HTTP date: now
    status.inject_fault("status", "rate_limit", retry_after="in a moment, please")  # garbage
    status.inject_fault("status", "server_error", status=503)
    status.inject_fault("status", "reset")
    status.inject_fault("status", "slow", delay=3)  # the connection's timeout is 1 s: a read timeout
    busy = sims["busy"]
    busy.inject_fault("submit", "rate_limit", retry_after=0.5, code=None)  # a plain 429
    busy.inject_fault("submit", "rate_limit", retry_after=0.5)  # 006001094, resources insufficient
    uncertain = sims["uncertain"]
    uncertain.inject_fault("submit", "server_error", status=502, after_create=True)
    uncertain.inject_fault("submit", "reset", after_create=True)
    uncertain.inject_fault("submit", "slow", delay=3, after_create=True)
    refusing = sims["refusing"]
    refusing_request = KlingVideoRequest.build(
        prompt="an earlier task", aspect_ratio="16:9", external_task_id="already-used"
    )
    httpx.post(
        f"{refusing.base_url}/v1/tasks/submit",
        json=refusing_request.to_api_body(),
        headers={"Authorization": LEAKCHECK_KEY},
        timeout=10,
    ).raise_for_status()


@pytest.fixture(scope="module")
def faults_run(
    tmp_path_factory: pytest.TempPathFactory,
    simulators: dict[str, KlingSimulator],
    local_s3: LocalS3Server,
) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("api-faults")
    load_faults(simulators)
    with_timeout = {
        name: json.dumps({**json.loads(kling_conn(sim)), "extra": {"timeout": 1}})
        for name, sim in simulators.items()
    }
    denied = json.loads(local_s3.airflow_connection_json())
    denied["password"] = "not-the-secret-key"
    down = json.loads(local_s3.airflow_connection_json())
    down["extra"] = {**down["extra"], "endpoint_url": "http://127.0.0.1:9"}  # nothing listens on port 9
    env = airflow_env(
        home,
        {
            **{f"kling_{name}": value for name, value in with_timeout.items()},
            "aws_default": local_s3.airflow_connection_json(),
            "aws_down": json.dumps(down),
            "aws_denied": json.dumps(denied),
        },
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILES)
    migrated = airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    prefix = "api-faults/"
    conf = json.dumps({"s3_bucket": "kling-tests", "s3_prefix": prefix})
    ran = airflow(env, "dags", "test", DAG_ID, "--conf", conf, timeout=600)
    log = ran.stdout + ran.stderr
    (home / "dags-test.log").write_text(log)
    with sqlite3.connect(home / "airflow.db") as db:
        instances = {
            task_id: (state, try_number)
            for task_id, state, try_number in db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (DAG_ID,)
            )
        }
        stored = "\n".join(
            str(row)
            for table in ("xcom", "task_instance", "trigger", "task_state_store")
            for row in _rows(db, table)
        )
    return {"log": log, "instances": instances, "stored": stored, "prefix": prefix, "home": home}


def _rows(db: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    try:
        return list(db.execute(f"SELECT * FROM {table}"))
    except sqlite3.OperationalError:
        return []


def prompts(sim: KlingSimulator) -> list[str]:
    return [body["input"]["prompt"] for body in sim.submitted]


def keys_under(s3: S3Client, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket="kling-tests", Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def open_uploads(s3: S3Client, prefix: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket="kling-tests", Prefix=prefix).get("Uploads", []))


def landed(s3: S3Client, run: dict[str, Any], task_id: str) -> bytes:
    return s3.get_object(Bucket="kling-tests", Key=f"{run['prefix']}{task_id}/0.mp4")["Body"].read()


# -- API rows -------------------------------------------------------------------------------------------


def test_status_429s_5xx_resets_and_read_timeouts_are_ridden_out(
    faults_run: dict[str, Any], simulators: dict[str, KlingSimulator]
) -> None:
    sim = simulators["status_faults"]
    assert faults_run["instances"]["status_faults"] == ("success", 1)
    assert sim.pending_faults == []  # every fault met a status query
    assert prompts(sim) == ["status faults"]  # one task


def test_429_and_006001094_on_submit_create_exactly_one_task(
    faults_run: dict[str, Any], simulators: dict[str, KlingSimulator]
) -> None:
    sim = simulators["busy"]
    assert faults_run["instances"]["submit_busy"] == ("success", 1)
    assert sim.requests["submit"] == 3  # two refusals proved nothing was created, then one task
    assert prompts(sim) == ["busy API"]


def test_a_failure_after_the_submit_was_sent_is_uncertain_and_never_resent(
    faults_run: dict[str, Any], simulators: dict[str, KlingSimulator]
) -> None:
    sim = simulators["uncertain"]
    for name in ("first", "second", "third"):
        assert faults_run["instances"][f"uncertain_{name}"] == ("failed", 2)
    assert sorted(prompts(sim)) == ["uncertain first", "uncertain second", "uncertain third"]  # one each
    assert sim.requests["submit"] == 3
    log = faults_run["log"]
    assert log.count("A task may have been created (and billed). Look it up by external_task_id") >= 3
    assert log.count("started a Kling submit that was never confirmed") >= 3  # each retry explains


def test_a_creation_error_fails_fast_with_the_vendors_message(
    faults_run: dict[str, Any], simulators: dict[str, KlingSimulator]
) -> None:
    assert faults_run["instances"]["creation_refused"] == ("failed", 1)  # retries=2, none used
    assert "external_task_id" in faults_run["log"]
    assert prompts(simulators["refusing"]) == ["an earlier task"]


# -- CDN rows -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["land_truncated_once", "land_reset_once", "land_gzip"])
def test_a_broken_or_gzip_download_lands_whole_in_one_try(
    faults_run: dict[str, Any], s3_client: S3Client, task_id: str
) -> None:
    assert faults_run["instances"][task_id] == ("success", 1)
    assert landed(s3_client, faults_run, task_id) == VIDEO


@pytest.mark.parametrize("task_id", ["land_truncated_try", "land_endless"])
def test_a_download_that_fails_a_try_leaves_nothing_and_the_retry_lands_it(
    faults_run: dict[str, Any], s3_client: S3Client, task_id: str
) -> None:
    assert faults_run["instances"][task_id] == ("success", 2)
    assert landed(s3_client, faults_run, task_id) == VIDEO
    assert open_uploads(s3_client, faults_run["prefix"]) == []


def test_an_endless_answer_is_cut_at_the_size_cap(faults_run: dict[str, Any]) -> None:
    assert "larger than the 4194304-byte cap" in faults_run["log"]


def test_an_expired_result_url_fails_clearly_and_leaves_nothing(
    faults_run: dict[str, Any], s3_client: S3Client
) -> None:
    state, _ = faults_run["instances"]["land_expired"]
    assert state == "failed"
    assert "has expired (HTTP 403)" in faults_run["log"]
    assert keys_under(s3_client, f"{faults_run['prefix']}land_expired/") == []


# -- S3 rows --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "says"),
    [
        ("land_s3_down", "Cannot check whether"),
        ("land_s3_denied", "Cannot check whether"),
    ],
)
def test_s3_faults_fail_clearly_and_leave_nothing(
    faults_run: dict[str, Any], s3_client: S3Client, task_id: str, says: str
) -> None:
    assert faults_run["instances"][task_id] == ("failed", 1)
    assert says in faults_run["log"]
    assert keys_under(s3_client, f"{faults_run['prefix']}{task_id}/") == []


def test_after_s3_faults_the_video_is_still_retrievable(
    faults_run: dict[str, Any], s3_client: S3Client
) -> None:
    assert faults_run["instances"]["land_after_s3_faults"] == ("success", 1)
    assert landed(s3_client, faults_run, "land_after_s3_faults") == VIDEO
    assert open_uploads(s3_client, faults_run["prefix"]) == []


def test_the_run_paid_once_per_video_and_never_leaked_the_key(
    faults_run: dict[str, Any], simulators: dict[str, KlingSimulator]
) -> None:
    assert prompts(simulators["cdn"]) == ["cdn faults"]
    assert LEAKCHECK_KEY not in faults_run["log"]
    assert LEAKCHECK_KEY not in faults_run["stored"]
    for path in Path(faults_run["home"]).rglob("*.log"):
        assert LEAKCHECK_KEY not in path.read_text(errors="replace"), path
