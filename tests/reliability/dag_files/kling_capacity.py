"""
Test-only DAG of the fault matrix row "50 mapped tasks at once against a simulator that admits 5 at a time"
(``tests/reliability/test_mapped_capacity.py``), for a real scheduler, triggerer and LocalExecutor.

``generate`` maps :class:`KlingSubmitVideoOperator` over 50 distinct prompts (submit, then wait in the
triggerer) in the pool ``kling`` (the test creates it with 5 slots, ``--include-deferred``); ``land`` copies
each finished task's video into S3 (``params.s3_bucket``, under ``params.s3_prefix``). The connections
``kling_capacity`` and ``aws_capacity`` are the test's own simulator (capacity 5) and S3 server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

DAG_ID: Final = "kling_capacity"
#: How many videos the run makes, one per prompt.
VIDEOS: Final = 50
PROMPTS: Final = [
    f"capacity row: video {index:02d} of {VIDEOS}, a paper boat on a pond" for index in range(VIDEOS)
]
POOL: Final = "kling"
KLING_CONN_ID: Final = "kling_capacity"
AWS_CONN_ID: Final = "aws_capacity"
ASPECT_RATIO: Final = "16:9"
#: Seconds between two status queries of each wait.
POLL_SECONDS: Final = 1.0


def kling_task_id_of(result: dict[str, Any]) -> str:
    """Pick the Kling task id out of a finished-task dict."""
    return str(result["kling_task_id"])


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"s3_bucket": "kling-tests", "s3_prefix": "capacity/"},
    tags=["kling", "test"],
) as dag:
    generate = KlingSubmitVideoOperator.partial(
        task_id="generate",
        kling_conn_id=KLING_CONN_ID,
        aspect_ratio=ASPECT_RATIO,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=600,
        pool=POOL,
        # The test expects every try to be the first; a retry lets a broken run end for its diagnostics
        # (and reattaches to the task its first try paid for).
        retries=1,
        retry_delay=timedelta(seconds=1),
    ).expand(prompt=PROMPTS)

    KlingToS3Operator.partial(
        task_id="land",
        kling_conn_id=KLING_CONN_ID,
        aws_conn_id=AWS_CONN_ID,
        s3_bucket="{{ params.s3_bucket }}",
        s3_key="{{ params.s3_prefix }}{kling_task_id}/{index}.mp4",
    ).expand(kling_task_id=generate.output.map(kling_task_id_of))
