"""
### Kling batch: one video per prompt, with dynamic task mapping

Reads a JSON list of prompts from S3 (`s3://<kling_video_bucket>/kling-inputs/prompts.json`), generates one
video per prompt with **dynamic task mapping** (`.partial(...).expand(prompt=...)`), and lands every video in
S3. Each mapped task instance is its own Kling task: a retry of one map index reattaches to the task that
index paid for, and never touches the others.

`generate` is the one-operator variant: `KlingSubmitVideoOperator(wait_for_completion=True)` submits and
waits (deferred to the triggerer) and returns the finished-task dict
`{"kling_task_id", "status", "urls", "usage_seconds", "submit_time", "finish_time"}`.

The pool `kling` (see `example_kling_text_to_video`) caps how many prompts render at once; the rest queue.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

POLL_SECONDS = float(os.environ.get("KLING_EXAMPLE_POLL_SECONDS", "30"))
BUCKET = "{{ var.value.get('kling_video_bucket', 'kling-videos') }}"


# [START howto_kling_batch_prompts]
@task
def read_prompts(bucket: str, key: str = "kling-inputs/prompts.json") -> list[str]:
    """Read the list of prompts to render from a JSON file in S3."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    prompts = json.loads(S3Hook(aws_conn_id="aws_default").read_key(key, bucket_name=bucket))
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError(f"s3://{bucket}/{key} must hold a JSON list of non-empty strings")
    return prompts


# [END howto_kling_batch_prompts]


# [START howto_kling_task_id_of]
def kling_task_id_of(result: dict[str, Any]) -> str:
    """Pick the Kling task id out of a finished-task dict."""
    return str(result["kling_task_id"])


# [END howto_kling_task_id_of]


with DAG(
    dag_id="example_kling_batch",
    description="One Kling video per prompt of a JSON file in S3 (dynamic task mapping)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "kling"],
):
    prompts = read_prompts(BUCKET)

    # [START howto_operator_kling_mapped]
    generate = KlingSubmitVideoOperator.partial(
        task_id="generate",
        mode="std",
        aspect_ratio="9:16",
        duration=5,
        wait_for_completion=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
        pool="kling",
        retries=2,
    ).expand(prompt=prompts)
    # [END howto_operator_kling_mapped]

    # [START howto_transfer_kling_to_s3_mapped]
    KlingToS3Operator.partial(
        task_id="land_in_s3",
        s3_bucket=BUCKET,  # the default key, kling/<dag_id>/<kling task id>/<index>.mp4, never collides
    ).expand(kling_task_id=generate.output.map(kling_task_id_of))
    # [END howto_transfer_kling_to_s3_mapped]
