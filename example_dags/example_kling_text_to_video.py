"""
### Kling text to video, every day, landed in S3

A daily video from a text prompt, in the three steps a data-platform team monitors separately:

1. **`submit`** (`KlingSubmitVideoOperator`) validates the request against the API's rules (R1..R22)
   before any call, submits one task and pushes its Kling task id to XCom. A retry never pays twice: it
   reattaches to the task an earlier try submitted.
2. **`wait`** (`KlingTaskSensor`) waits for the task in the **triggerer** (deferrable), so no worker slot
   is held while the video renders; its log tells the story (status changes, billed seconds).
3. **`land_in_s3`** (`KlingToS3Operator`) streams the result video into S3 (result URLs expire after about
   24 hours), verified, and emits an Asset event per video on the `kling_videos` alias, which
   `example_kling_video_catalog` is scheduled on.

The prompt is templated: the Airflow Variable `kling_daily_prompt` (with a default) and the run's date.
The bucket is the Variable `kling_video_bucket` (default `kling-videos`).

**Pool.** The Kling tasks run in the pool `kling`, which caps how many videos are generated at once
(rate limits, cost). Create it with deferred tasks counted, or a deferred sensor would not hold its slot:

```
airflow pools set kling 2 "Concurrent Kling video tasks" --include-deferred
```
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator
from airflow_provider_kling.sensors.kling import KlingTaskSensor
from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

# Seconds between two status queries: 30 suits real videos, which take minutes. The demo and the tests
# poll their local simulator faster through this environment variable.
POLL_SECONDS = float(os.environ.get("KLING_EXAMPLE_POLL_SECONDS", "30"))
BUCKET = "{{ var.value.get('kling_video_bucket', 'kling-videos') }}"

with DAG(
    dag_id="example_kling_text_to_video",
    description="A daily Kling video from a templated prompt, landed in S3",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    # [START howto_kling_pool]
    default_args={"pool": "kling", "retries": 2, "retry_delay": timedelta(seconds=30)},
    # [END howto_kling_pool]
    tags=["example", "kling"],
):
    # [START howto_operator_kling_submit]
    submit = KlingSubmitVideoOperator(
        task_id="submit",
        prompt=(
            "{{ var.value.get('kling_daily_prompt', 'A lighthouse on a cliff at dawn, waves crashing, "
            "slow drone shot') }}. Seasonal light of {{ macros.ds_format(ds, '%Y-%m-%d', '%B') }}."
        ),
        negative_prompt="blurry, low quality, text, watermark",
        mode="std",
        aspect_ratio="16:9",
        duration=5,
        kling_conn_id="kling_default",
    )
    # [END howto_operator_kling_submit]

    # [START howto_sensor_kling_task]
    wait = KlingTaskSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",  # the id the submit pushed to XCom
        poke_interval=POLL_SECONDS,  # the trigger's poll interval
        timeout=3600,  # the trigger's timeout: one hour for the video
    )
    # [END howto_sensor_kling_task]

    # [START howto_transfer_kling_to_s3]
    land = KlingToS3Operator(
        task_id="land_in_s3",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        s3_bucket=BUCKET,
        s3_key="kling/text-to-video/{{ ds }}/{kling_task_id}/{index}.mp4",
        metadata={"airflow-run-id": "{{ run_id }}"},
        aws_conn_id="aws_default",
        pool="default_pool",  # a copy to S3 does not use the Kling API's capacity
    )
    # [END howto_transfer_kling_to_s3]

    submit >> wait >> land
