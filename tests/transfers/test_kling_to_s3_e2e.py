"""
KlingToS3Operator end to end: the local simulator's result URLs into the real local S3 server (SeaweedFS).

Every fault test checks that nothing is left behind: no object under the test's prefix and no multipart
upload that was neither completed nor aborted.
"""

from __future__ import annotations

import email.header
import hashlib
import re
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_kling.exceptions import (
    KlingResultDownloadError,
    KlingResultExpiredError,
    KlingS3KeyExistsError,
    KlingS3UploadError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.transfers.kling_to_s3 import (
    KlingToS3Operator,
)

from ._support import MiB, ResettingProxy, corrupt_part_checksum

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing import KlingSimulator

pytestmark = pytest.mark.integration

PART = 5 * MiB
PROMPT = "一只猫在冲浪, golden hour"


@pytest.fixture
def env(kling_connection: str, aws_connection: str) -> SimpleNamespace:
    return SimpleNamespace(kling_conn_id=kling_connection, aws_conn_id=aws_connection)


def finish_task(simulator: KlingSimulator, *, prompt: str = PROMPT) -> str:
    """Submit a task to the simulator and let it finish; return its id."""
    with KlingHook() as hook:
        task_id = hook.submit_task(KlingVideoRequest.build(prompt=prompt, aspect_ratio="16:9", duration=5))
    simulator.advance_time(60)
    return task_id


def make_operator(**kwargs: Any) -> KlingToS3Operator:
    options: dict[str, Any] = {"part_size": PART, "download_retry_delay": 0.05}
    options.update(kwargs)
    with DAG("kling_copy_test", schedule=None):
        return KlingToS3Operator(task_id="copy", **options)


def run(operator: KlingToS3Operator, xcom: dict[str, Any] | None = None) -> tuple[list[str], Any]:
    """Render the operator's templates as a task run would, execute it, return (result, outlet_events)."""
    ti = SimpleNamespace(
        task_id=operator.task_id,
        map_index=-1,
        xcom_pull=lambda task_ids=None, key="return_value", **_: (xcom or {}).get(task_ids),
    )
    context: dict[str, Any] = {
        "dag": operator.dag,
        "task": operator,
        "ti": ti,
        "task_instance": ti,
        "run_id": "manual__2026-11-26T10:00:00+00:00",
        "ds": "2026-11-26",
        "params": {},
        "outlet_events": OutletEventAccessors(),
    }
    operator.render_template_fields(context)  # type: ignore[arg-type]
    return operator.execute(context), context["outlet_events"]  # type: ignore[arg-type]


def objects(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def unfinished(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return [upload["Key"] for upload in uploads]


def assert_nothing_left(s3: S3Client, bucket: str, prefix: str) -> None:
    assert objects(s3, bucket, prefix) == []
    assert unfinished(s3, bucket, prefix) == []


def result_urls(task_id: str) -> list[str]:
    with KlingHook() as hook:
        return hook.get_task(task_id).urls


def result_bytes(url: str) -> bytes:
    return httpx.get(url, timeout=30).content


def test_round_trip_lands_every_result_with_metadata_and_asset_events(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    kling_simulator.results_per_task = 2
    kling_simulator.result_size_bytes = 2 * PART + 12345  # three parts each
    task_id = finish_task(kling_simulator)
    operator = make_operator(
        kling_task_id="{{ ti.xcom_pull(task_ids='submit')['kling_task_id'] }}",
        s3_bucket=s3_bucket,
        s3_key=s3_prefix + "{{ dag.dag_id }}/{{ ds }}/{kling_task_id}/{index}.mp4",
        metadata={
            "prompt-sha256": "{{ ti.xcom_pull(task_ids='submit')['prompt_sha256'] }}",
            "prompt": PROMPT,
        },
    )
    digest = hashlib.sha256(PROMPT.encode()).hexdigest()

    uris, events = run(operator, {"submit": {"kling_task_id": task_id, "prompt_sha256": digest}})

    keys = [f"{s3_prefix}kling_copy_test/2026-11-26/{task_id}/{index}.mp4" for index in (0, 1)]
    assert uris == [f"s3://{s3_bucket}/{key}" for key in keys]
    urls = result_urls(task_id)
    for key, url in zip(keys, urls, strict=True):
        stored = s3_client.get_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
        assert stored["Body"].read() == result_bytes(url)
        assert stored["ContentLength"] == 2 * PART + 12345
        assert stored["ContentType"] == "video/mp4"
        assert stored["ChecksumCRC32"].endswith("-3")  # verified per part, three parts
        metadata = stored["Metadata"]
        assert metadata["kling-task-id"] == task_id
        assert metadata["kling-model"] == "kling-v3-omni"
        assert metadata["kling-usage-seconds"] == "5"
        assert metadata["prompt-sha256"] == digest
        ((raw, charset),) = email.header.decode_header(metadata["prompt"])
        assert isinstance(raw, bytes)
        assert raw.decode(charset or "ascii") == PROMPT
    alias_events = events[AssetAlias("kling_videos")].asset_alias_events
    assert [event.dest_asset_key.uri for event in alias_events] == uris
    assert alias_events[0].extra["kling-task-id"] == task_id
    assert alias_events[0].extra["prompt-sha256"] == digest
    assert alias_events[0].extra["size-bytes"] == 2 * PART + 12345
    assert unfinished(s3_client, s3_bucket, s3_prefix) == []


def test_default_key_layout_is_per_dag_and_task(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str
) -> None:
    task_id = finish_task(kling_simulator)

    uris, _ = run(make_operator(kling_task_id=task_id, s3_bucket=s3_bucket))

    assert uris == [f"s3://{s3_bucket}/kling/kling_copy_test/{task_id}/0.mp4"]
    s3_client.delete_object(Bucket=s3_bucket, Key=f"kling/kling_copy_test/{task_id}/0.mp4")


def test_a_retried_copy_is_an_idempotent_no_op(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    task_id = finish_task(kling_simulator)
    key = s3_prefix + "{index}.mp4"
    first, _ = run(make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=key))
    etag = s3_client.head_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["ETag"]

    operator = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=key)
    again, events = run(operator)

    assert again == first
    assert operator.landed[0].skipped
    assert s3_client.head_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["ETag"] == etag
    assert events[AssetAlias("kling_videos")].asset_alias_events[0].extra["skipped"] is True


@pytest.mark.parametrize("size", [None, 3 * PART], ids=["small", "multipart"])
def test_fault_truncated_download_that_persists_leaves_nothing(
    kling_simulator: KlingSimulator,
    env: SimpleNamespace,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
    size: int | None,
) -> None:
    kling_simulator.result_size_bytes = size
    task_id = finish_task(kling_simulator)
    kling_simulator.inject_fault("result", "truncate", times=3)
    operator = make_operator(
        kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4", max_download_attempts=3
    )

    with pytest.raises(KlingResultDownloadError, match=r"broke off.*failed after 3 attempts"):
        run(operator)

    assert kling_simulator.requests["result"] == 3
    assert_nothing_left(s3_client, s3_bucket, s3_prefix)


def test_fault_truncated_once_is_resumed_with_range(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    kling_simulator.result_size_bytes = 3 * PART
    task_id = finish_task(kling_simulator)
    kling_simulator.inject_fault("result", "truncate")

    uris, _ = run(make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4"))

    (url,) = result_urls(task_id)
    stored = s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["Body"].read()
    assert stored == result_bytes(url)
    assert uris == [f"s3://{s3_bucket}/{s3_prefix}0.mp4"]
    assert unfinished(s3_client, s3_bucket, s3_prefix) == []


def _through_proxy(monkeypatch: pytest.MonkeyPatch, proxy: ResettingProxy) -> None:
    """Make the operator's hook see the task's result URLs through the proxy."""
    original = KlingHook.get_task

    def get_task(self: KlingHook, task_id: str, **kwargs: Any) -> Any:
        task = original(self, task_id, **kwargs)
        return task.model_copy(update={"urls": [proxy.url(url) for url in task.urls]})

    monkeypatch.setattr(KlingHook, "get_task", get_task)


@pytest.mark.parametrize("resets", [1, 10], ids=["transient", "persistent"])
def test_fault_connection_reset_mid_stream(
    kling_simulator: KlingSimulator,
    env: SimpleNamespace,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    resets: int,
) -> None:
    kling_simulator.result_size_bytes = 3 * PART
    task_id = finish_task(kling_simulator)
    (url,) = result_urls(task_id)
    operator = make_operator(
        kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4", max_download_attempts=3
    )

    with ResettingProxy(kling_simulator.base_url, after_bytes=PART // 2, resets=resets) as proxy:
        _through_proxy(monkeypatch, proxy)
        if resets == 1:
            run(operator)
        else:
            with pytest.raises(
                KlingResultDownloadError, match=r"broke off.*failed after 3 attempts.*(Read|Protocol)Error"
            ):
                run(operator)

    if resets == 1:
        assert proxy.reset_count == 1
        stored = s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["Body"].read()
        assert stored == result_bytes(url)
        assert unfinished(s3_client, s3_bucket, s3_prefix) == []
    else:
        assert proxy.reset_count == 3
        assert_nothing_left(s3_client, s3_bucket, s3_prefix)


def test_fault_s3_rejects_a_middle_part(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    kling_simulator.result_size_bytes = 4 * PART
    task_id = finish_task(kling_simulator)
    operator = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4")
    seen = corrupt_part_checksum(operator.s3_hook.get_conn(), part_number=2)

    with pytest.raises(KlingS3UploadError, match="BadDigest"):
        run(operator)

    assert 2 in seen  # the server itself verified part 2's checksum and refused it
    assert_nothing_left(s3_client, s3_bucket, s3_prefix)


@pytest.mark.parametrize("how", ["403", "ttl"])
def test_fault_expired_result_url(
    kling_simulator: KlingSimulator,
    env: SimpleNamespace,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
    how: str,
) -> None:
    task_id = finish_task(kling_simulator)
    if how == "403":
        kling_simulator.inject_fault("result", "expired")
    else:
        kling_simulator.advance_time(25 * 3600)
    operator = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4")

    with pytest.raises(AirflowFailException, match=r"expired.*within 24 hours") as raised:
        run(operator)

    assert isinstance(raised.value.__cause__, KlingResultExpiredError)  # it can never pass: no retries
    assert_nothing_left(s3_client, s3_bucket, s3_prefix)


def test_fault_a_different_object_at_the_key(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    task_id = finish_task(kling_simulator)
    s3_client.put_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4", Body=b"someone else's video")
    operator = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4")

    with pytest.raises(AirflowFailException, match=r"already exists.*set replace=True") as raised:
        run(operator)

    assert isinstance(raised.value.__cause__, KlingS3KeyExistsError)
    assert objects(s3_client, s3_bucket, s3_prefix) == [f"{s3_prefix}0.mp4"]
    stored = s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["Body"].read()
    assert stored == b"someone else's video"
    assert unfinished(s3_client, s3_bucket, s3_prefix) == []

    run(
        make_operator(
            kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4", replace=True
        )
    )
    assert s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}0.mp4")["ContentType"] == "video/mp4"


def test_an_unfinished_task_is_refused_before_any_download(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    with KlingHook() as hook:
        task_id = hook.submit_task(KlingVideoRequest.build(prompt="slow", aspect_ratio="1:1"))

    with pytest.raises(KlingTaskNotReadyError, match="not Success"):
        run(make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4"))

    assert kling_simulator.requests["result"] == 0
    assert_nothing_left(s3_client, s3_bucket, s3_prefix)


def test_a_failed_task_raises_its_error(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_bucket: str, s3_prefix: str
) -> None:
    kling_simulator.fail_next_tasks(1, "content moderation")
    task_id = finish_task(kling_simulator)

    with pytest.raises(AirflowFailException, match="content moderation") as raised:
        run(make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_prefix + "{index}.mp4"))

    assert isinstance(raised.value.__cause__, KlingTaskFailedError)


def test_a_skipped_copy_reads_the_checksum_back_and_another_runs_copy_emits_no_event(
    kling_simulator: KlingSimulator, env: SimpleNamespace, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    kling_simulator.result_size_bytes = 2 * PART + 1  # three parts: a composite checksum
    task_id = finish_task(kling_simulator)
    key = s3_prefix + "{index}.mp4"
    first = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=key)
    run(first)
    operator = make_operator(kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=key)
    operator.dag.dag_id = "another_dag"  # another task instance: it did not write the object

    uris, events = run(operator)

    (skipped,) = operator.landed
    assert skipped.skipped
    assert skipped.checksum == first.landed[0].checksum
    assert skipped.checksum is not None
    assert skipped.checksum.endswith("-3")  # read back from S3: the composite checksum of 3 parts
    assert uris == [f"s3://{s3_bucket}/{s3_prefix}0.mp4"]
    assert events[AssetAlias("kling_videos")].asset_alias_events == []


@pytest.mark.parametrize(
    ("s3_key", "problem"),
    [
        ("", "it is empty"),
        ("/{prefix}{{index}}.mp4", "starts with '/'"),
        ("{prefix}a//{{index}}.mp4", "empty, '.' or '..' segment"),
        ("{prefix}a/../{{index}}.mp4", "empty, '.' or '..' segment"),
    ],
    ids=["empty", "leading-slash", "double-slash", "dot-dot"],
)
def test_a_key_seaweedfs_would_list_elsewhere_is_refused_before_any_download(
    kling_simulator: KlingSimulator,
    env: SimpleNamespace,
    s3_client: S3Client,
    s3_bucket: str,
    s3_prefix: str,
    s3_key: str,
    problem: str,
) -> None:
    task_id = finish_task(kling_simulator)
    operator = make_operator(
        kling_task_id=task_id, s3_bucket=s3_bucket, s3_key=s3_key.format(prefix=s3_prefix)
    )

    with pytest.raises(AirflowFailException, match=re.escape(problem)) as raised:
        run(operator)

    assert isinstance(raised.value.__cause__, ValueError)
    assert kling_simulator.requests["result"] == 0
    assert_nothing_left(s3_client, s3_bucket, s3_prefix)
    assert objects(s3_client, s3_bucket, "/" + s3_prefix) == []
