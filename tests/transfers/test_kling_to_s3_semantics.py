"""
KlingToS3Operator's contract with Airflow (issue 10), against moto: what fails without retries, what the
Asset events carry, what a skipped copy does.

The operator runs its real ``execute`` with a real S3 client (moto) and a stand-in Kling hook that serves
one task and its result bytes (:class:`~tests.transfers._support.ResultServer`). The same contract in a
real ``airflow dags test`` run is in ``test_kling_to_s3_dag_run.py``.
"""

from __future__ import annotations

import email.header
import hashlib
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_kling.exceptions import (
    KlingResultExpiredError,
    KlingS3KeyExistsError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.models import KlingTask, TaskStatus
from airflow_provider_kling.transfers._multipart import S3StreamUploader
from airflow_provider_kling.transfers._s3_objects import S3Target
from airflow_provider_kling.transfers.kling_to_s3 import WRITER_METADATA_KEY, KlingToS3Operator

from ._support import MiB, ResultServer, keys, moto_s3

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.hooks._download import KlingResultStream

BUCKET = "kling-semantics"
TASK_ID = "kt-42"
VIDEO = hashlib.sha256(b"video").digest() * (MiB // 32)  # 1 MiB: one PutObject
PROMPT = "一只猫在冲浪, golden hour"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    with moto_s3(monkeypatch, BUCKET) as client:
        yield client


class FakeKlingHook:
    """Serves one task's status and its result bytes; records the downloads it opened."""

    def __init__(self, task: KlingTask, *, expired: bool = False) -> None:
        self.task = task
        self.expired = expired
        self.downloads: list[str] = []

    def get_task(self, kling_task_id: str) -> KlingTask:
        return self.task

    def stream_result(self, url: str, *, kling_task_id: str, **_: Any) -> KlingResultStream:
        self.downloads.append(url)
        if self.expired:
            raise KlingResultExpiredError(kling_task_id, 403)
        return ResultServer(VIDEO).stream()

    def close(self) -> None:
        pass


def make_task(status: str = "Success", urls: list[str] | None = None, **extra: Any) -> KlingTask:
    return KlingTask(
        task_id=TASK_ID,
        status=TaskStatus(status),
        urls=[f"https://results.test/{TASK_ID}/0.mp4"] if urls is None else urls,
        usage_seconds=5,
        **extra,
    )


def operator(hook: FakeKlingHook, s3: S3Client, **kwargs: Any) -> KlingToS3Operator:
    options: dict[str, Any] = {
        "task_id": "copy",
        "kling_task_id": TASK_ID,
        "s3_bucket": BUCKET,
        "s3_key": "videos/{kling_task_id}/{index}.mp4",
        "aws_conn_id": None,
    }
    options.update(kwargs)
    op = KlingToS3Operator(**options)
    op.__dict__["kling_hook"] = hook
    op.__dict__["uploader"] = S3StreamUploader(s3)
    return op


def context(*, run_id: str = "manual__1", map_index: int = -1, dag_id: str = "d") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="copy", map_index=map_index, try_number=1)
    return {"ti": ti, "task_instance": ti, "run_id": run_id, "outlet_events": OutletEventAccessors()}


def events(ctx: dict[str, Any]) -> list[Any]:
    return list(ctx["outlet_events"][AssetAlias("kling_videos")].asset_alias_events)


# --- what can never pass fails without retries -----------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "expired", "cause", "says"),
    [
        (make_task("Failure", urls=[], error_message="content moderation"), False, KlingTaskFailedError,
         "content moderation"),
        (make_task(), True, KlingResultExpiredError, "has expired"),
        (make_task(urls=[]), False, KlingTaskNotReadyError, "no result URLs"),
    ],
    ids=["failed-task", "expired-url", "success-without-urls"],
)  # fmt: skip
def test_what_can_never_pass_fails_without_retries_and_keeps_the_message(
    s3: S3Client, task: KlingTask, expired: bool, cause: type[Exception], says: str
) -> None:
    op = operator(FakeKlingHook(task, expired=expired), s3, retries=2)

    with pytest.raises(AirflowFailException, match=says) as raised:
        op.execute(context())  # type: ignore[arg-type]

    assert isinstance(raised.value.__cause__, cause)
    assert keys(s3, BUCKET) == []


@pytest.mark.parametrize("status", ["Pending", "Running"])
def test_an_unfinished_task_is_retried_it_may_finish(s3: S3Client, status: str) -> None:
    hook = FakeKlingHook(make_task(status, urls=[]))

    with pytest.raises(KlingTaskNotReadyError, match=f"is {status}, not Success"):
        operator(hook, s3).execute(context())  # type: ignore[arg-type]

    assert hook.downloads == []


def test_a_different_object_at_the_key_fails_before_any_download(s3: S3Client) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=f"videos/{TASK_ID}/0.mp4", Body=b"other", Metadata={"kling-task-id": "kt-other"}
    )
    hook = FakeKlingHook(make_task())

    with pytest.raises(AirflowFailException, match="set replace=True") as raised:
        operator(hook, s3).execute(context())  # type: ignore[arg-type]

    assert isinstance(raised.value.__cause__, KlingS3KeyExistsError)
    assert hook.downloads == []  # checked before any download
    assert s3.get_object(Bucket=BUCKET, Key=f"videos/{TASK_ID}/0.mp4")["Body"].read() == b"other"


def test_a_different_object_at_a_later_key_fails_before_the_first_result_lands(s3: S3Client) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=f"videos/{TASK_ID}/1.mp4", Body=b"other", Metadata={"kling-task-id": "kt-other"}
    )
    hook = FakeKlingHook(make_task(urls=["https://results.test/0.mp4", "https://results.test/1.mp4"]))

    with pytest.raises(AirflowFailException, match="already exists"):
        operator(hook, s3).execute(context())  # type: ignore[arg-type]

    assert hook.downloads == []
    assert keys(s3, BUCKET) == [f"videos/{TASK_ID}/1.mp4"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"kling_task_id": ""}, "kling_task_id"),
        ({"s3_key": ""}, "it is empty"),
        ({"s3_bucket": None, "s3_key": f"s3://{BUCKET}/"}, "it is empty"),
        ({"s3_key": "/videos/{index}.mp4"}, "starts with '/'"),
        ({"s3_key": "videos//{index}.mp4"}, "empty, '.' or '..' segment"),
        ({"s3_key": "fixed.mp4", "kling_task_id": TASK_ID}, "must contain '{index}'"),
        ({"metadata": {"kling-task-id": "forged"}}, "reserved"),
        ({"metadata": {"my key": "x"}}, "not a valid S3 metadata name"),
        ({"replace": "perhaps"}, "replace must be a boolean"),
    ],
    ids=[
        "empty-task-id",
        "empty-key",
        "empty-key-in-url",
        "leading-slash",
        "double-slash",
        "several-results-one-key",
        "reserved-metadata",
        "invalid-metadata",
        "invalid-replace",
    ],
)
def test_a_request_that_renders_wrong_fails_without_retries_before_any_download(
    s3: S3Client, options: dict[str, Any], says: str
) -> None:
    hook = FakeKlingHook(make_task(urls=["https://results.test/0.mp4", "https://results.test/1.mp4"]))
    if "s3_key" not in options or options["s3_key"] != "fixed.mp4":
        hook.task = make_task()

    with pytest.raises(AirflowFailException, match=says) as raised:
        operator(hook, s3, **options).execute(context())  # type: ignore[arg-type]

    assert isinstance(raised.value.__cause__, ValueError)
    assert hook.downloads == []
    assert keys(s3, BUCKET) == []


# --- Asset events ----------------------------------------------------------------------------------------


def test_asset_event_extra_holds_the_rendered_unicode_values_and_s3_the_encoded_ones(s3: S3Client) -> None:
    ctx = context()
    op = operator(FakeKlingHook(make_task()), s3, metadata={"Prompt": PROMPT, "run": 3})

    uris = op.execute(ctx)  # type: ignore[arg-type]

    (event,) = events(ctx)
    assert event.dest_asset_key.uri == uris[0]
    assert event.extra["prompt"] == PROMPT
    assert event.extra["run"] == "3"
    assert event.extra["kling-task-id"] == TASK_ID
    assert WRITER_METADATA_KEY not in event.extra
    stored = s3.head_object(Bucket=BUCKET, Key=f"videos/{TASK_ID}/0.mp4")["Metadata"]
    assert stored["prompt"].startswith("=?UTF-8?B?")
    ((raw, charset),) = email.header.decode_header(stored["prompt"])
    assert isinstance(raw, bytes)
    assert raw.decode(charset or "ascii") == PROMPT


def test_a_copy_skipped_because_another_task_instance_landed_it_emits_no_event(s3: S3Client) -> None:
    first = context(run_id="scheduled__1")
    operator(FakeKlingHook(make_task()), s3).execute(first)  # type: ignore[arg-type]
    assert len(events(first)) == 1

    second = context(run_id="scheduled__2")
    op = operator(FakeKlingHook(make_task()), s3)
    uris = op.execute(second)  # type: ignore[arg-type]

    assert uris == [f"s3://{BUCKET}/videos/{TASK_ID}/0.mp4"]  # the return value stays complete
    assert op.landed[0].skipped
    assert events(second) == []


def test_a_copy_skipped_because_an_earlier_try_landed_it_emits_the_event_that_try_could_not(
    s3: S3Client,
) -> None:
    # A try that landed the object and then failed emitted nothing (Airflow records outlet events only
    # when a try succeeds): the retry is the first announcement.
    operator(FakeKlingHook(make_task()), s3).execute(context())  # type: ignore[arg-type]

    retry = context()
    op = operator(FakeKlingHook(make_task()), s3)
    op.execute(retry)  # type: ignore[arg-type]

    (event,) = events(retry)
    assert op.landed[0].skipped
    assert event.extra["skipped"] is True
    assert event.extra["checksum"] == op.landed[0].checksum  # moto reports none: see the e2e tests
    assert event.extra["size-bytes"] == len(VIDEO)


def test_the_writer_is_the_task_instance(s3: S3Client) -> None:
    operator(FakeKlingHook(make_task()), s3).execute(context(map_index=3))  # type: ignore[arg-type]
    mapped_sibling = context(map_index=4)

    operator(FakeKlingHook(make_task()), s3).execute(mapped_sibling)  # type: ignore[arg-type]

    assert events(mapped_sibling) == []
    stored = s3.head_object(Bucket=BUCKET, Key=f"videos/{TASK_ID}/0.mp4")["Metadata"]
    assert len(stored[WRITER_METADATA_KEY]) == 64


def test_the_skip_check_asks_s3_for_the_checksum(s3: S3Client) -> None:
    target = S3Target(BUCKET, "v/0.mp4", metadata={"kling-task-id": TASK_ID})
    engine = S3StreamUploader(s3)
    engine.upload(ResultServer(VIDEO).stream(), target)
    modes: list[str | None] = []

    def record(request: Any, **_: Any) -> None:
        mode = request.headers.get("x-amz-checksum-mode")
        modes.append(mode.decode() if isinstance(mode, bytes) else mode)

    s3.meta.events.register("before-send.s3.HeadObject", record)

    again = engine.upload(ResultServer(VIDEO).stream(), target)

    assert again.skipped
    assert modes == ["ENABLED"]  # without it S3 leaves the checksum out (moto always does: see e2e)


def test_the_skip_reports_the_checksum_s3_read_back(s3: S3Client) -> None:
    target = S3Target(BUCKET, "v/0.mp4", metadata={"kling-task-id": TASK_ID})
    engine = S3StreamUploader(s3)
    landed = engine.upload(ResultServer(VIDEO).stream(), target)

    def add_checksum(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ChecksumCRC32"] = landed.checksum  # what S3 answers to ChecksumMode=ENABLED

    s3.meta.events.register("after-call.s3.HeadObject", add_checksum)

    again = engine.upload(ResultServer(VIDEO).stream(), target)

    assert again.skipped
    assert again.checksum == landed.checksum is not None
