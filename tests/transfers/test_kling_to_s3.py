"""
The streaming S3 upload engine and the operator's own logic, against moto (fast, in process).

The same behaviour against the real SeaweedFS server and the simulator is in ``test_kling_to_s3_e2e.py``.
"""

from __future__ import annotations

import base64
import email.header
import hashlib
import re
import sys
import threading
import tracemalloc
import types
import zlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import AssetAlias
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kling.exceptions import (
    KlingResultDownloadError,
    KlingS3KeyExistsError,
    KlingS3UploadError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.hooks._download import KlingResultStream
from airflow_provider_kling.models import KlingTask, TaskStatus
from airflow_provider_kling.transfers._multipart import S3StreamUploader, choose_part_size
from airflow_provider_kling.transfers._s3_objects import (
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
    S3Target,
    build_metadata,
    encode_metadata_value,
)
from airflow_provider_kling.transfers.kling_to_s3 import DEFAULT_ASSET_ALIAS, KlingToS3Operator

from ._support import MiB, ResultServer, fail_part, keys, moto_s3, unfinished_uploads

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

BUCKET = "kling-unit"
PART = S3_MIN_PART_SIZE


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    with moto_s3(monkeypatch, BUCKET) as client:
        yield client


def payload(size: int) -> bytes:
    """Deterministic, non-repeating bytes (so a misplaced chunk changes the content)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def uploader(s3: S3Client, **kwargs: Any) -> S3StreamUploader:
    options: dict[str, Any] = {"part_size": PART, "max_concurrency": 2}
    options.update(kwargs)
    return S3StreamUploader(s3, **options)


def target(key: str = "videos/0.mp4", **metadata: str) -> S3Target:
    return S3Target(BUCKET, key, metadata={"kling-task-id": "task-1", **metadata})


def sent_headers(s3: S3Client, operation: str) -> list[dict[str, str]]:
    """Record the HTTP headers of every ``operation`` request."""
    seen: list[dict[str, str]] = []

    def handler(request: Any, **_: Any) -> None:
        seen.append(
            {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        )

    s3.meta.events.register(f"before-send.s3.{operation}", handler)
    return seen


# --- part size -----------------------------------------------------------------------------------------


def test_part_size_is_the_preferred_size_for_ordinary_videos() -> None:
    assert choose_part_size(10 * MiB) == 8 * MiB
    assert choose_part_size(None) == 8 * MiB
    assert choose_part_size(2 * 1024 * MiB) == 8 * MiB


def test_a_video_slightly_over_one_part_is_cut_in_even_parts_for_concurrency() -> None:
    assert choose_part_size(10 * MiB, concurrency=4) == 5 * MiB  # 5 + 5, not 8 + 2
    assert choose_part_size(30 * MiB, concurrency=4) == 8 * MiB  # 8 + 8 + 8 + 6
    assert choose_part_size(8 * MiB, concurrency=4) == 8 * MiB  # one part: a single PutObject
    assert choose_part_size(100 * MiB, concurrency=4) == 8 * MiB


def test_part_size_never_below_the_s3_minimum() -> None:
    assert choose_part_size(100, preferred=1024) == S3_MIN_PART_SIZE


def test_part_size_grows_to_stay_within_10000_parts() -> None:
    size = 200 * 1024 * MiB  # 200 GiB: 8 MiB parts would need 25,600
    part = choose_part_size(size)
    assert part % MiB == 0
    assert -(-size // part) <= S3_MAX_PARTS
    assert -(-size // (part - MiB)) > S3_MAX_PARTS  # the smallest whole MiB that fits


def test_part_size_rejects_objects_s3_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit in 10000 parts"):
        choose_part_size(S3_MAX_PARTS * 5 * 1024 * MiB + 1)


@given(st.integers(min_value=0, max_value=5 * 1024**4), st.integers(min_value=1, max_value=16))
def test_part_size_always_fits_s3_limits(size: int, concurrency: int) -> None:
    part = choose_part_size(size, concurrency=concurrency)
    assert part >= S3_MIN_PART_SIZE
    assert -(-size // part) <= S3_MAX_PARTS


# --- metadata ------------------------------------------------------------------------------------------


def test_ascii_metadata_is_kept_as_is() -> None:
    assert encode_metadata_value("a cat, surfing") == "a cat, surfing"
    assert encode_metadata_value(5) == "5"


@pytest.mark.parametrize("text", ["一只猫在冲浪", "line one\nline two", "café"])
def test_other_metadata_is_rfc2047_encoded_and_decodes_back(text: str) -> None:
    encoded = encode_metadata_value(text)
    assert encoded.isascii()
    assert "\n" not in encoded
    ((raw, charset),) = email.header.decode_header(encoded)
    assert isinstance(raw, bytes)
    assert raw.decode(charset or "ascii") == text


def test_user_metadata_is_merged_with_lowercased_keys() -> None:
    merged = build_metadata({"kling-task-id": "t"}, {"Prompt-SHA256": "abc", "run": 3})
    assert merged == {"kling-task-id": "t", "prompt-sha256": "abc", "run": "3"}


def test_user_metadata_cannot_use_the_kling_prefix() -> None:
    with pytest.raises(ValueError, match="'kling-' prefix is reserved"):
        build_metadata({"kling-task-id": "t"}, {"kling-task-id": "forged"})


def test_user_metadata_keys_must_be_header_names() -> None:
    with pytest.raises(ValueError, match="not a valid S3 metadata name"):
        build_metadata({}, {"my key": "x"})


def test_metadata_over_2kb_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"S3 allows 2048: store a digest"):
        build_metadata({}, {"prompt": "x" * 2500})


# --- the upload engine ---------------------------------------------------------------------------------


def test_small_video_lands_in_one_put_with_a_crc32_checksum(s3: S3Client) -> None:
    data = payload(1 * MiB + 7)
    server = ResultServer(data)
    headers = sent_headers(s3, "PutObject")

    landed = uploader(s3).upload(server.stream(), target(prompt="cat"))

    assert (landed.size, landed.parts, landed.skipped) == (len(data), 1, False)
    assert landed.checksum == crc32_b64(data)
    assert headers[0]["x-amz-checksum-crc32"] == crc32_b64(data)
    stored = s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "video/mp4"
    assert stored["Metadata"] == {"kling-task-id": "task-1", "prompt": "cat"}


def test_large_video_streams_into_checksummed_parts(s3: S3Client) -> None:
    data = payload(3 * PART + 12345)
    headers = sent_headers(s3, "UploadPart")

    landed = uploader(s3).upload(ResultServer(data).stream(), target())

    assert (landed.size, landed.parts) == (len(data), 4)
    expected = [crc32_b64(data[i : i + PART]) for i in range(0, len(data), PART)]
    assert sorted(h["x-amz-checksum-crc32"] for h in headers) == sorted(expected)
    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data
    assert unfinished_uploads(s3, BUCKET) == []


def test_sha256_checksums_on_request(s3: S3Client) -> None:
    data = payload(PART + 10)
    headers = sent_headers(s3, "UploadPart")

    uploader(s3, checksum_algorithm="SHA256").upload(ResultServer(data).stream(), target())

    sent = sorted(h["x-amz-checksum-sha256"] for h in headers)
    expected = sorted(
        base64.b64encode(hashlib.sha256(data[i : i + PART]).digest()).decode()
        for i in range(0, len(data), PART)
    )
    assert sent == expected


def test_unknown_checksum_algorithm_is_refused(s3: S3Client) -> None:
    with pytest.raises(ValueError, match="CRC32 or SHA256"):
        S3StreamUploader(s3, checksum_algorithm="MD5")  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_a_broken_download_resumes_with_range(s3: S3Client, fault: str) -> None:
    data = payload(2 * PART + 999)
    server = ResultServer(data, faults=[fault])

    landed = uploader(s3).upload(server.stream(), target())

    half = len(data) // 2
    if fault == "reset":  # the reset comes at the first 64 KiB chunk boundary at or past half
        half = -(-half // 65536) * 65536
    assert server.ranges == [None, f"bytes={half}-"]
    assert landed.size == len(data)
    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data


def test_a_server_that_ignores_range_is_read_again_and_the_prefix_dropped(s3: S3Client) -> None:
    data = payload(2 * PART + 5)
    server = ResultServer(data, faults=["reset", "ignore-range"])

    uploader(s3).upload(server.stream(), target())

    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data


@pytest.mark.parametrize("fault", ["reset", "truncate"])
@pytest.mark.parametrize("size", [MiB, 3 * PART], ids=["single-put", "multipart"])
def test_a_download_that_keeps_failing_leaves_nothing(s3: S3Client, fault: str, size: int) -> None:
    server = ResultServer(payload(size), faults=[fault] * 10)

    with pytest.raises(KlingResultDownloadError, match=r"broke off.*failed after 3 attempts"):
        uploader(s3).upload(server.stream(max_attempts=3), target())

    assert len(server.requests) == 3
    assert keys(s3, BUCKET) == []
    assert unfinished_uploads(s3, BUCKET) == []


def test_more_bytes_than_content_length_is_an_error(s3: S3Client) -> None:
    server = ResultServer(payload(3 * PART), faults=["extra"])

    with pytest.raises(KlingResultDownloadError, match="more than its Content-Length"):
        uploader(s3).upload(server.stream(), target())

    assert keys(s3, BUCKET) == []
    assert unfinished_uploads(s3, BUCKET) == []


@pytest.mark.parametrize("size", [MiB, 2 * PART + 1], ids=["single-put", "multipart"])
def test_without_content_length_the_video_still_lands(s3: S3Client, size: int) -> None:
    data = payload(size)

    landed = uploader(s3).upload(ResultServer(data, content_length=False).stream(), target())

    assert landed.size == len(data)
    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data


def test_without_content_length_a_break_is_resumed_from_the_content_range(s3: S3Client) -> None:
    data = payload(3 * PART)
    server = ResultServer(data, faults=["reset"], content_length=False)

    landed = uploader(s3).upload(server.stream(), target())

    assert landed.size == len(data)
    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data
    assert unfinished_uploads(s3, BUCKET) == []


def test_a_failing_middle_part_aborts_the_upload(s3: S3Client) -> None:
    attempted = fail_part(s3, 2)

    with pytest.raises(KlingS3UploadError, match=r"S3 rejected the upload of s3://kling-unit/videos/0\.mp4"):
        uploader(s3).upload(ResultServer(payload(4 * PART)).stream(), target())

    assert 2 in attempted
    assert keys(s3, BUCKET) == []
    assert unfinished_uploads(s3, BUCKET) == []


def test_a_missing_bucket_is_a_clear_upload_error_and_leaves_nothing(s3: S3Client) -> None:
    server = ResultServer(payload(3 * PART))

    with pytest.raises(KlingS3UploadError, match="NoSuchBucket"):
        uploader(s3).upload(server.stream(), S3Target("kling-no-such-bucket", "videos/0.mp4"))

    assert keys(s3, BUCKET) == []
    assert unfinished_uploads(s3, BUCKET) == []


def test_same_video_already_there_is_a_no_op(s3: S3Client) -> None:
    data = payload(MiB)
    uploader(s3).upload(ResultServer(data).stream(), target())
    puts = sent_headers(s3, "PutObject")

    again = uploader(s3).upload(ResultServer(data).stream(), target())

    assert (again.skipped, again.size, again.parts) == (True, len(data), 0)
    assert puts == []


@pytest.mark.parametrize(
    ("existing", "task"), [(b"other", "task-1"), (payload(MiB), "task-2")], ids=["other-size", "other-task"]
)
def test_a_different_object_there_is_an_error(s3: S3Client, existing: bytes, task: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="videos/0.mp4", Body=existing, Metadata={"kling-task-id": task})

    with pytest.raises(KlingS3KeyExistsError, match="set replace=True to overwrite it"):
        uploader(s3).upload(ResultServer(payload(MiB)).stream(), target())

    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == existing


def test_replace_overwrites(s3: S3Client) -> None:
    s3.put_object(Bucket=BUCKET, Key="videos/0.mp4", Body=b"old")
    data = payload(PART + 1)

    uploader(s3).upload(ResultServer(data).stream(), target(), replace=True)

    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == data


@pytest.mark.parametrize("same", [True, False], ids=["same-video", "other-object"])
def test_a_writer_that_wins_the_race_is_never_overwritten(s3: S3Client, same: bool) -> None:
    data = payload(2 * PART)
    rival = data if same else b"rival"

    def write_first(**_: Any) -> None:
        s3.put_object(Bucket=BUCKET, Key="videos/0.mp4", Body=rival, Metadata={"kling-task-id": "task-1"})

    s3.meta.events.register_first("before-call.s3.CompleteMultipartUpload", write_first)

    if same:
        assert uploader(s3).upload(ResultServer(data).stream(), target()).skipped
    else:
        with pytest.raises(KlingS3KeyExistsError):
            uploader(s3).upload(ResultServer(data).stream(), target())
    s3.meta.events.unregister("before-call.s3.CompleteMultipartUpload", write_first)
    assert s3.get_object(Bucket=BUCKET, Key="videos/0.mp4")["Body"].read() == rival
    assert unfinished_uploads(s3, BUCKET) == []


class _RepeatBody(httpx.SyncByteStream):
    def __init__(self, size: int) -> None:
        self.size = size
        self.chunk = payload(65536)

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self.size, 65536):
            yield self.chunk[: min(65536, self.size - start)]


class _DiscardingS3:
    """Just enough of an S3 client to take parts and throw them away (so only the engine holds memory)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sizes: list[int] = []
        self.checksums_ok = True

    def head_object(self, **_: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        if not self.sizes:
            raise ClientError(
                {
                    "ResponseMetadata": {
                        "RequestId": "",
                        "HostId": "",
                        "HTTPStatusCode": 404,
                        "HTTPHeaders": {},
                        "RetryAttempts": 0,
                    }
                },
                "HeadObject",
            )
        return {"ContentLength": sum(self.sizes)}

    def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"UploadId": "u"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.sizes.append(len(kwargs["Body"]))
            self.checksums_ok &= kwargs["ChecksumCRC32"] == crc32_b64(kwargs["Body"])
        return {"ETag": f'"{kwargs["PartNumber"]}"'}

    def complete_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"ETag": '"done"'}


def _peak_memory(size: int) -> tuple[int, _DiscardingS3]:
    client = httpx.Client(
        transport=httpx.MockTransport(
            lambda _: httpx.Response(200, headers={"content-length": str(size)}, stream=_RepeatBody(size))
        )
    )
    fake = _DiscardingS3()
    engine = S3StreamUploader(fake, part_size=PART, max_concurrency=2)  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        with KlingResultStream(client, "https://results.test/v.mp4", kling_task_id="task-1") as download:
            engine.upload(download, target())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, fake


def test_memory_stays_flat_whatever_the_video_size() -> None:
    small, _ = _peak_memory(8 * PART)
    large, fake = _peak_memory(32 * PART)

    assert fake.checksums_ok
    assert fake.sizes == [PART] * 32
    # At most max_concurrency + 2 parts live at once (2 uploading, 1 waiting, 1 being cut): a bound that
    # does not depend on the video's size (the large one is 160 MiB).
    assert small <= (2 + 2) * PART + MiB
    assert large <= (2 + 2) * PART + MiB
    assert large < small + PART


# --- the operator's own logic --------------------------------------------------------------------------


def make_task(status: str = "Success", urls: list[str] | None = None, **extra: Any) -> KlingTask:
    return KlingTask(
        task_id="kt-42",
        status=TaskStatus(status),
        urls=["https://results.test/kt-42/0.mp4"] if urls is None else urls,
        usage_seconds=5,
        **extra,
    )


def test_operator_templates_every_destination_field() -> None:
    assert set(KlingToS3Operator.template_fields) >= {
        "kling_task_id",
        "s3_bucket",
        "s3_key",
        "aws_conn_id",
        "kling_conn_id",
        "replace",
        "metadata",
    }


def test_operator_declares_its_asset_alias_outlet() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt", s3_bucket="b")
    assert AssetAlias(DEFAULT_ASSET_ALIAS) in op.outlets
    mine = KlingToS3Operator(task_id="mine", kling_task_id="kt", s3_bucket="b", asset_alias="clips")
    assert AssetAlias("clips") in mine.outlets
    none = KlingToS3Operator(task_id="none", kling_task_id="kt", s3_bucket="b", asset_alias=None)
    assert none.outlets == []


def test_keys_render_index_and_task_id_in_the_order_of_urls() -> None:
    op = KlingToS3Operator(
        task_id="copy", kling_task_id="kt-42", s3_bucket="b", s3_key="out/{kling_task_id}/{index}.mp4"
    )
    task = make_task(urls=["https://r/0", "https://r/1", "https://r/2"])

    targets = op.targets_for(task)

    assert [t.key for t in targets] == ["out/kt-42/0.mp4", "out/kt-42/1.mp4", "out/kt-42/2.mp4"]
    assert targets[0].metadata == {
        "kling-task-id": "kt-42",
        "kling-model": "kling-v3-omni",
        "kling-usage-seconds": "5",
    }
    assert targets[0].content_type == "video/mp4"


@pytest.mark.parametrize(
    ("s3_key", "problem"),
    [
        ("../escape/{index}.mp4", "'..' segment"),
        ("a/../../b/{index}.mp4", "'..' segment"),
        ("a//b/{index}.mp4", "empty"),
        ("/leading/{index}.mp4", "starts with '/'"),
        ("a/./b/{index}.mp4", "'.' or '..'"),
        ("new\nline/{index}.mp4", "control character"),
        ("{index}/..", "'..'"),
    ],
)
def test_keys_that_could_land_elsewhere_are_refused_before_any_download(s3_key: str, problem: str) -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b", s3_key=s3_key)
    with pytest.raises(ValueError, match=re.escape(problem)):
        op.targets_for(make_task(urls=["https://r/0"]))


@pytest.mark.parametrize("kling_task_id", ["", "../../escape", "a\nb", "vidéo"])
def test_a_hostile_task_id_fails_before_any_request(kling_task_id: str) -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id=kling_task_id, s3_bucket="b")
    with respx.mock(assert_all_mocked=True), pytest.raises(AirflowFailException, match="kling_task_id") as e:
        op.execute({})
    assert isinstance(e.value.__cause__, ValueError)  # it can never pass: no retries


def test_a_full_s3_url_key_needs_no_bucket() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_key="s3://videos/a/{index}.mp4")
    (only,) = op.targets_for(make_task())
    assert (only.bucket, only.key) == ("videos", "a/0.mp4")


def test_several_results_need_index_in_the_key() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b", s3_key="fixed.mp4")
    with pytest.raises(ValueError, match=r"s3_key must contain '\{index\}'"):
        op.targets_for(make_task(urls=["https://r/0", "https://r/1"]))


def test_a_failed_task_raises_its_error() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b")
    with pytest.raises(KlingTaskFailedError, match="content moderation"):
        op.targets_for(make_task("Failure", urls=[], error_message="content moderation"))


@pytest.mark.parametrize("status", ["Pending", "Running", "Expired"])
def test_an_unfinished_task_is_not_copied(status: str) -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b")
    with pytest.raises(KlingTaskNotReadyError, match=f"is {status}, not Success"):
        op.targets_for(make_task(status, urls=[]))


def test_a_success_without_urls_is_reported() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b")
    with pytest.raises(KlingTaskNotReadyError, match="no result URLs"):
        op.targets_for(make_task(urls=[]))


def test_user_metadata_reaches_every_target() -> None:
    op = KlingToS3Operator(
        task_id="copy", kling_task_id="kt-42", s3_bucket="b", metadata={"prompt-sha256": "ab12"}
    )
    (only,) = op.targets_for(make_task())
    assert only.metadata["prompt-sha256"] == "ab12"


def test_openlineage_is_skipped_when_the_provider_is_missing() -> None:
    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b")
    if "airflow.providers.openlineage" in sys.modules or _importable("airflow.providers.openlineage"):
        pytest.skip("the OpenLineage provider is installed")
    assert op.get_openlineage_facets_on_complete(None) is None


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_openlineage_facets_name_the_result_urls_and_the_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dataset:
        def __init__(self, namespace: str, name: str) -> None:
            self.namespace, self.name = namespace, name

    class OperatorLineage:
        def __init__(self, inputs: list[Dataset], outputs: list[Dataset]) -> None:
            self.inputs, self.outputs = inputs, outputs

    facet = types.ModuleType("airflow.providers.common.compat.openlineage.facet")
    facet.Dataset = Dataset  # type: ignore[attr-defined]
    extractors = types.ModuleType("airflow.providers.openlineage.extractors")
    extractors.OperatorLineage = OperatorLineage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.providers.common.compat.openlineage.facet", facet)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    from airflow_provider_kling.transfers._s3_objects import LandedObject

    op = KlingToS3Operator(task_id="copy", kling_task_id="kt-42", s3_bucket="b")
    op._source_urls = ["https://cdn.test/results/kt-42/0.mp4?sig=secret"]
    op.landed = [LandedObject("b", "kling/d/kt-42/0.mp4", 10, '"e"', None, 1)]

    lineage = op.get_openlineage_facets_on_complete(None)

    assert lineage is not None
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("https://cdn.test", "/results/kt-42/0.mp4")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://b", "kling/d/kt-42/0.mp4")]


def test_a_destination_that_cannot_be_checked_is_an_upload_error(s3: S3Client) -> None:
    def deny(**_: Any) -> tuple[Any, dict[str, Any]]:
        parsed = {
            "Error": {"Code": "403", "Message": "Forbidden"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        return httpx.Response(403), parsed

    # botocore-stubs types handlers as returning None; a before-call handler's return is the response.
    s3.meta.events.register("before-call.s3.HeadObject", deny)  # type: ignore[arg-type]

    with pytest.raises(KlingS3UploadError, match=r"Cannot check whether s3://kling-unit/videos/0\.mp4"):
        uploader(s3).upload(ResultServer(payload(MiB)).stream(), target())

    assert unfinished_uploads(s3, BUCKET) == []
