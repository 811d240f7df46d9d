"""
Test-only DAG of the fault matrix's API, CDN and S3 rows (``tests/reliability/test_api_cdn_s3_faults.py``).

``airflow dags test`` runs it against several simulators, each behind its own connection and loaded with
its faults by the test before the run (status faults, a busy API, submits that fail after creating the
task, a refusing API), and against the local S3 server. CDN faults are injected by a task right before
the copy it breaks (the tasks are chained, so each fault meets the copy it is meant for).

Connections (set by the test): ``kling_status_faults``, ``kling_busy``, ``kling_uncertain``,
``kling_refusing``, ``kling_cdn`` (simulators); ``aws_default`` (the local S3 server), ``aws_down`` (a
closed port), ``aws_denied`` (the local S3 server with a wrong secret key). Run conf: ``s3_bucket``,
``s3_prefix``. (A missing bucket is tested against moto in ``tests/transfers``: SeaweedFS creates a
bucket on its first write.)
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseHook, task

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

if TYPE_CHECKING:
    from airflow_provider_kling.testing.simulator import Endpoint, FaultKind

FAST: dict[str, Any] = {
    "wait_for_completion": True,
    "poll_interval": 0.2,
    "timeout": 120,
    "aspect_ratio": "16:9",
    "trigger_rule": "all_done",  # the tasks run one after the other, whatever the one before did
}
RETRY_ONCE: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=1)}
KEY = "{{ params.s3_prefix }}{{ task.task_id }}/{index}.mp4"
CDN_TASK = "{{ ti.xcom_pull(task_ids='cdn_source')['kling_task_id'] }}"


def inject(endpoint: Endpoint, kind: FaultKind, **options: Any) -> None:
    """Load a fault into the CDN simulator (its admin API, through the connection's host)."""
    from airflow_provider_kling.testing import KlingSimulatorClient

    KlingSimulatorClient(str(BaseHook.get_connection("kling_cdn").host)).inject_fault(
        endpoint, kind, **options
    )


with DAG(
    dag_id="kling_api_faults",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"s3_bucket": "kling-tests", "s3_prefix": "faults/"},
    tags=["kling", "test"],
) as dag:
    # Row: 429 (Retry-After seconds, HTTP date, garbage), 5xx, resets, read timeouts on status.
    status_faults = KlingSubmitVideoOperator(
        task_id="status_faults", prompt="status faults", kling_conn_id="kling_status_faults", **FAST
    )
    # Row: 429 / 006001094 on submit (and an API at capacity).
    submit_busy = KlingSubmitVideoOperator(
        task_id="submit_busy", prompt="busy API", kling_conn_id="kling_busy", **FAST
    )
    # Row: a 5xx, a reset or a timeout after the submit was sent (the task exists).
    uncertain = [
        KlingSubmitVideoOperator(
            task_id=f"uncertain_{name}",
            prompt=f"uncertain {name}",
            kling_conn_id="kling_uncertain",
            **FAST,
            **RETRY_ONCE,
        )
        for name in ("first", "second", "third")
    ]
    # Row: 006001099 creation error (a reused external_task_id): fails fast, no retry loop.
    refused = KlingSubmitVideoOperator(
        task_id="creation_refused",
        prompt="refused",
        external_task_id="already-used",
        kling_conn_id="kling_refusing",
        retries=2,
        retry_delay=timedelta(seconds=1),
        **FAST,
    )

    # CDN rows: one video, copied again and again through injected faults.
    cdn_source = KlingSubmitVideoOperator(
        task_id="cdn_source", prompt="cdn faults", kling_conn_id="kling_cdn", **FAST
    )

    def copy(task_id: str, **options: Any) -> KlingToS3Operator:
        arguments: dict[str, Any] = {
            "kling_conn_id": "kling_cdn",
            "s3_bucket": "{{ params.s3_bucket }}",
            "s3_key": KEY,
            "download_retry_delay": 0.1,
            "trigger_rule": "all_done",
            **options,
        }
        return KlingToS3Operator(task_id=task_id, kling_task_id=CDN_TASK, **arguments)

    @task(trigger_rule="all_done")
    def break_once_truncate() -> None:
        inject("result", "truncate", times=1)

    @task(trigger_rule="all_done")
    def break_once_reset() -> None:
        inject("result", "reset", times=1)

    @task(trigger_rule="all_done")
    def answer_gzip() -> None:
        inject("result", "gzip", times=1)

    @task(trigger_rule="all_done")
    def truncate_every_request_of_one_try() -> None:
        inject("result", "truncate", times=3)

    @task(trigger_rule="all_done")
    def answer_endless() -> None:
        inject("result", "endless", times=1, seconds=20)

    @task(trigger_rule="all_done")
    def expire() -> None:
        inject("result", "expired", times=10)

    chain = [
        cdn_source,
        break_once_truncate(),
        copy("land_truncated_once"),
        break_once_reset(),
        copy("land_reset_once"),
        answer_gzip(),
        copy("land_gzip"),
        truncate_every_request_of_one_try(),
        copy("land_truncated_try", max_download_attempts=3, **RETRY_ONCE),
        answer_endless(),
        copy("land_endless", max_download_bytes=4 * 1024 * 1024, **RETRY_ONCE),
        copy("land_s3_down", aws_conn_id="aws_down"),
        copy("land_s3_denied", aws_conn_id="aws_denied"),
        copy("land_after_s3_faults"),
        expire(),
        copy("land_expired", retries=2, retry_delay=timedelta(seconds=1)),
    ]
    for upstream, downstream in itertools.pairwise(chain):
        upstream >> downstream
    status_faults >> submit_busy >> uncertain[0] >> uncertain[1] >> uncertain[2] >> refused >> cdn_source
