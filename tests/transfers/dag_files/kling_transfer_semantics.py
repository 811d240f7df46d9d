"""
Test-only DAG of KlingToS3Operator's contract with Airflow (issue 10), run by ``airflow dags test`` in
``tests/transfers/test_kling_to_s3_dag_run.py``.

Every copy has ``retries=2``: what can never pass must fail in its first try. The test creates the Kling
tasks on its simulators before the run (one simulator per case, each behind its own connection, so each
case's result downloads can be counted) and passes their ids as run conf.

Connections (set by the test): ``kling_ok``, ``kling_failed``, ``kling_expired``, ``kling_exists``,
``kling_keycheck``, ``kling_slow`` (simulators); ``aws_default`` (the local S3 server). Run conf:
``s3_prefix`` and one Kling task id per simulator (``ok``, ``failed``, ``expired``, ``exists``,
``keycheck``, ``slow``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, BaseHook

from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

BUCKET = "kling-tests"
PROMPT = "一只猫在冲浪, golden hour"
NO_RETRY_NEEDED: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=1)}


class LostAfterLanding(KlingToS3Operator):
    """A copy whose first try lands every object and then dies (a lost worker) before it succeeds."""

    def execute(self, context: Any) -> list[str]:
        uris = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("the worker was lost after the objects landed")
        return uris


def finish_the_slow_task(context: Any) -> None:
    """``on_retry_callback``: move the slow simulator's clock on, so the retry finds the task finished."""
    from airflow_provider_kling.testing import KlingSimulatorClient

    with KlingSimulatorClient(str(BaseHook.get_connection("kling_slow").host)) as client:
        client.advance_time(120)


def copy(
    task_id: str,
    case: str,
    *,
    key: str = "{{ task.task_id }}/{index}.mp4",
    operator: type[KlingToS3Operator] = KlingToS3Operator,
    **options: Any,
) -> KlingToS3Operator:
    """A copy of the Kling task ``params[case]`` through the connection ``kling_<case>``."""
    arguments: dict[str, Any] = {
        "kling_conn_id": f"kling_{case}",
        "s3_bucket": BUCKET,
        "s3_key": "{{ params.s3_prefix }}" + key,
        "download_retry_delay": 0.1,
        **NO_RETRY_NEEDED,
        **options,
    }
    return operator(task_id=task_id, kling_task_id="{{ params." + case + " }}", **arguments)


with DAG(
    dag_id="kling_transfer_semantics",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"s3_prefix": "semantics/"}
    | dict.fromkeys(("ok", "failed", "expired", "exists", "keycheck", "slow"), ""),
    tags=["kling", "test"],
) as dag:
    # Item 4: what can never pass fails in its first try.
    copy("copy_failed_task", "failed")
    copy("copy_expired", "expired")
    copy("copy_key_exists", "exists")
    KlingToS3Operator(
        task_id="copy_empty_task_id",
        kling_task_id="{{ params.get('missing', '') }}",
        kling_conn_id="kling_keycheck",
        s3_bucket=BUCKET,
        **NO_RETRY_NEEDED,
    )
    # ... and what may pass later is retried: a task still running.
    copy("copy_not_ready", "slow", on_retry_callback=finish_the_slow_task)
    # Item 7: keys that S3 servers would list elsewhere are refused before any download.
    KlingToS3Operator(
        task_id="copy_leading_slash",
        kling_task_id="{{ params.keycheck }}",
        kling_conn_id="kling_keycheck",
        s3_bucket=BUCKET,
        s3_key="/{{ params.s3_prefix }}{{ task.task_id }}/{index}.mp4",
        **NO_RETRY_NEEDED,
    )
    copy("copy_double_slash", "keycheck", key="{{ task.task_id }}//{index}.mp4")
    KlingToS3Operator(
        task_id="copy_empty_key",
        kling_task_id="{{ params.keycheck }}",
        kling_conn_id="kling_keycheck",
        s3_bucket=BUCKET,
        s3_key="{{ params.get('missing', '') }}",
        **NO_RETRY_NEEDED,
    )
    # Item 6: Unicode metadata reaches the Asset event as Unicode; item 7: a second copy of the same video
    # (another task instance) is skipped and emits no event.
    first = copy("copy_unicode", "ok", key="shared/{index}.mp4", metadata={"prompt": PROMPT, "n": 3})
    again = copy("copy_again", "ok", key="shared/{index}.mp4", metadata={"prompt": PROMPT, "n": 3})
    first >> again
    # A try that landed its objects and died emitted no event: the retry announces them (skipped).
    copy("copy_retried", "ok", operator=LostAfterLanding)
