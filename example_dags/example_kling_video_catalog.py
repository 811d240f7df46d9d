"""
### Catalog every new Kling video (scheduled on Asset events)

Runs whenever `KlingToS3Operator` lands videos: it is scheduled on the `kling_videos` **Asset alias**, on
which the transfer emits one Asset event per object (`s3://bucket/key`, with the Kling task id, size and
checksum in the event's `extra`). It checks that every object is in S3 with the size the event announced,
and writes a JSON catalog entry per run to `s3://<kling_video_bucket>/kling-catalog/`.

A manual run, which has no triggering events, catalogs the alias's latest events instead.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, AssetAlias, task

BUCKET = "{{ var.value.get('kling_video_bucket', 'kling-videos') }}"
# [START howto_kling_asset_alias]
KLING_VIDEOS = AssetAlias("kling_videos")  # the alias KlingToS3Operator emits its Asset events on
# [END howto_kling_asset_alias]
MANUAL_RUN_EVENTS = 10


# [START howto_kling_asset_consumer]
@task(inlets=[KLING_VIDEOS])
def catalog_new_videos(bucket: str, **context: Any) -> str:
    """Check each new video's object and write one catalog entry listing them; return its s3:// URI."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    triggering = context["triggering_asset_events"]
    events = list(triggering[KLING_VIDEOS]) if KLING_VIDEOS in triggering else []
    if not events:  # a manual run: take the alias's latest events
        events = list(context["inlet_events"][KLING_VIDEOS].ascending(False).limit(MANUAL_RUN_EVENTS))
    s3 = S3Hook(aws_conn_id="aws_default")
    entries = []
    for event in events:
        video_bucket, key = S3Hook.parse_s3_url(event.asset.uri)
        head = s3.head_object(key, video_bucket)
        if head is None or head["ContentLength"] != event.extra.get("size-bytes"):
            raise ValueError(f"{event.asset.uri} is missing or not the size its Asset event announced")
        entries.append(
            {
                "uri": event.asset.uri,
                "size_bytes": head["ContentLength"],
                "kling_task_id": event.extra.get("kling-task-id"),
                "source": f"{event.source_dag_id}/{event.source_run_id}/{event.source_task_id}",
                "landed_at": event.timestamp.isoformat(),
            }
        )
    run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
    key = f"kling-catalog/{run_id}.json"
    s3.load_string(json.dumps(entries, indent=2), key, bucket_name=bucket, replace=True)
    return f"s3://{bucket}/{key}"


# [END howto_kling_asset_consumer]


with DAG(
    dag_id="example_kling_video_catalog",
    description="Catalog each new Kling video landed in S3 (scheduled on the kling_videos Asset alias)",
    doc_md=__doc__,
    # [START howto_kling_asset_schedule]
    schedule=[KLING_VIDEOS],
    # [END howto_kling_asset_schedule]
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "kling"],
):
    catalog_new_videos(BUCKET)
