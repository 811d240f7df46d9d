"""
Copy the result videos of a finished Kling task into S3: streamed, in constant memory, verified, as Assets.

Result URLs are temporary (about :data:`~airflow_provider_kling.constants.RESULT_URL_TTL_HOURS` hours), so
this is where a user's videos are saved or lost. Two parts:

* :class:`S3StreamUploader`, the reusable engine: it streams an HTTP download (opened by a callable, e.g.
  :meth:`KlingHook.stream_result <airflow_provider_kling.hooks.kling.KlingHook.stream_result>`) straight
  into an S3 multipart upload, one part in memory per upload slot, whatever the video's size. Every part
  carries a CRC32 (or SHA-256) checksum that the S3 server verifies; the byte count is checked against
  ``Content-Length``; a download that breaks is resumed with a ``Range`` request a bounded number of times;
  any failure aborts the multipart upload, so no partial object and no unfinished upload is left.
* :class:`KlingToS3Operator`, the thin operator: read the task, copy every result URL, emit one Asset event
  per landed object, return the ``s3://`` URIs.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import math
import re
import time
import zlib
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_provider_kling.constants import DEFAULT_CONN_ID, MODEL_NAME
from airflow_provider_kling.exceptions import (
    KlingResultExpiredError,
    KlingS3KeyExistsError,
    KlingS3UploadError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.hooks._limits import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_RESULT_BYTES,
    DownloadLimits,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.hooks._download import KlingResultStream
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingTask

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3's smallest part (except the last one) and largest part, and its part-count limit.
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
#: Part size used when the video is small enough (as boto3's transfer manager does).
DEFAULT_PART_SIZE = 8 * MiB
#: S3 caps the user-defined metadata of an object at 2 KB (keys and values, UTF-8).
S3_MAX_METADATA_BYTES = 2048
#: Content type of the landed videos.
VIDEO_CONTENT_TYPE = "video/mp4"
#: The ``AssetAlias`` the operator emits its events under, by default.
DEFAULT_ASSET_ALIAS = "kling_videos"
#: Default key layout: one folder per Kling task (task ids are unique, so runs, map indexes and results
#: never collide, and a retried copy of the same task lands on the same keys: an idempotent no-op).
DEFAULT_S3_KEY = "kling/{{ dag.dag_id }}/{kling_task_id}/{index}.mp4"
#: The S3 metadata key naming the task instance that wrote an object (a SHA-256 of its DAG id, run id,
#: task id and map index): a copy skipped because the object is there emits an Asset event only when that
#: task instance wrote it (an earlier try, whose events Airflow never recorded since it did not succeed).
WRITER_METADATA_KEY = "kling-written-by"
#: The checksums S3 may report for an object, in the order they are read.
_CHECKSUM_NAMES = ("ChecksumCRC32", "ChecksumSHA256", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1")

ChecksumAlgorithm = Literal["CRC32", "SHA256"]


class ResultBytes(Protocol):
    """
    What the uploader reads: a one-pass iterable of a video's bytes that raises if it cannot be had whole.

    :class:`~airflow_provider_kling.hooks.kling.KlingResultStream` (from ``KlingHook.stream_result``) is one.
    """

    #: The video's size in bytes when known in advance, else ``None``.
    total: int | None
    #: The bytes yielded so far.
    received: int
    #: The requests the download took so far.
    attempts: int

    def __iter__(self) -> Iterator[bytes]: ...


_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_RESERVED_METADATA_PREFIX = "kling-"


@dataclass(frozen=True)
class S3Target:
    """
    Where and how a video lands in S3.

    :param bucket: the bucket.
    :param key: the object key.
    :param content_type: the object's ``Content-Type``.
    :param metadata: user-defined metadata (``x-amz-meta-*``), already encoded for S3.
    :param rendered_metadata: the same metadata as rendered, not encoded (Unicode stays Unicode): what an
        Asset event's ``extra`` carries. Empty when the caller has none.
    """

    bucket: str
    key: str
    content_type: str = VIDEO_CONTENT_TYPE
    metadata: Mapping[str, str] = field(default_factory=dict)
    rendered_metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The ``s3://bucket/key`` URI."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class LandedObject:
    """
    An object written (or found already there) by :class:`S3StreamUploader`.

    :param bucket: the bucket.
    :param key: the object key.
    :param size: its size in bytes (verified against ``Content-Length`` and S3's ``HEAD``).
    :param etag: the ETag S3 gave it.
    :param checksum: the S3 checksum (``base64`` CRC32/SHA-256; ``-N`` suffix for a multipart object).
    :param parts: how many parts were uploaded (1 for a single ``PutObject``, 0 when skipped).
    :param skipped: the same object was already at the key (``replace=False``): nothing was written.
    :param metadata: the object's S3 metadata: the target's when written, the one S3 reports when skipped.
    """

    bucket: str
    key: str
    size: int
    etag: str
    checksum: str | None
    parts: int
    skipped: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The ``s3://bucket/key`` URI."""
        return f"s3://{self.bucket}/{self.key}"


def choose_part_size(total_size: int | None, preferred: int = DEFAULT_PART_SIZE, concurrency: int = 1) -> int:
    """
    Return the multipart part size for an object of ``total_size`` bytes.

    The preferred size when it keeps the upload within S3's 10,000 parts, else the smallest whole number of
    MiB that does; never below S3's 5 MiB minimum. An object a little larger than one part is cut in
    ``concurrency`` even parts (whole MiB, at least 5 MiB) rather than a full part and a small rest, so its
    parts upload side by side (10 MiB: 5 + 5 MiB, not 8 + 2 MiB).

    :param total_size: the object's size (``None`` when unknown: the preferred size is used).
    :param preferred: the part size to use when the object is small enough.
    :param concurrency: how many parts are uploaded at once.
    :raises ValueError: when the object cannot fit in 10,000 parts of at most 5 GiB.
    """
    size = max(preferred, S3_MIN_PART_SIZE)
    if total_size is not None and math.ceil(total_size / size) > S3_MAX_PARTS:
        size = math.ceil(total_size / S3_MAX_PARTS / MiB) * MiB
    elif total_size is not None and size < total_size < size * concurrency:
        size = max(S3_MIN_PART_SIZE, math.ceil(total_size / concurrency / MiB) * MiB)
    if size > S3_MAX_PART_SIZE:
        raise ValueError(f"An object of {total_size} bytes does not fit in {S3_MAX_PARTS} parts of 5 GiB")
    return size


def _checksum(algorithm: ChecksumAlgorithm, data: bytes) -> str:
    if algorithm == "CRC32":
        return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def encode_metadata_value(value: object) -> str:
    """
    Return ``value`` as an S3 metadata value.

    S3 metadata travels in HTTP headers, so it must be printable US-ASCII; any other text (a Chinese prompt,
    a newline) is stored as one RFC 2047 encoded word, ``=?UTF-8?B?<base64>?=``, the form S3 itself returns
    non-ASCII metadata in (``email.header.decode_header`` reads it back).

    :param value: any value; it is converted with ``str()``.
    """
    text = str(value)
    if all(0x20 <= ord(char) < 0x7F for char in text):
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def render_metadata(kling: Mapping[str, str], user: Mapping[str, Any] | None) -> dict[str, str]:
    """
    Merge the provider's ``kling-*`` metadata with the user's own, as text, not yet encoded for S3.

    This is what an Asset event's ``extra`` carries (JSON holds any Unicode);
    :func:`build_metadata` encodes the same values for S3.

    :param kling: the provider's metadata (``kling-task-id``, ``kling-model``, ``kling-usage-seconds``).
    :param user: the user's metadata; keys are lowercased and must not start with ``kling-``; values are
        converted with ``str()``.
    :raises ValueError: on an invalid or reserved key.
    """
    merged = dict(kling)
    for raw_key, value in (user or {}).items():
        key = str(raw_key).lower()
        if not _METADATA_KEY.match(key):
            raise ValueError(
                f"metadata key {raw_key!r} is not a valid S3 metadata name (letters, digits, '.', '_', '-')"
            )
        if key.startswith(_RESERVED_METADATA_PREFIX):
            raise ValueError(f"metadata key {raw_key!r}: the 'kling-' prefix is reserved for the provider")
        merged[key] = str(value)
    return merged


def build_metadata(kling: Mapping[str, str], user: Mapping[str, Any] | None) -> dict[str, str]:
    """
    Merge the provider's ``kling-*`` metadata with the user's own, encoded and checked against S3's rules.

    :param kling: the provider's metadata (``kling-task-id``, ``kling-model``, ``kling-usage-seconds``).
    :param user: the user's metadata; keys are lowercased and must not start with ``kling-``.
    :raises ValueError: on an invalid or reserved key, or when the whole exceeds S3's 2 KB.
    """
    merged = {key: encode_metadata_value(value) for key, value in render_metadata(kling, user).items()}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in merged.items())
    if size > S3_MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata is {size} bytes, S3 allows {S3_MAX_METADATA_BYTES}: store a digest of long values "
            "(e.g. a SHA-256 of the prompt) rather than the values"
        )
    return merged


def _response_checksum(response: Mapping[str, Any], algorithm: ChecksumAlgorithm) -> str | None:
    value = response.get(f"Checksum{algorithm}")
    return str(value) if value is not None else None


def _head_checksum(head: Mapping[str, Any]) -> str | None:
    """The checksum a ``HeadObject`` with ``ChecksumMode=ENABLED`` reported, whatever its algorithm."""
    return next((str(head[name]) for name in _CHECKSUM_NAMES if head.get(name)), None)


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _take(pending: deque[bytes], size: int) -> bytes:
    """Remove ``size`` bytes from the front of ``pending`` and return them joined."""
    taken: list[bytes] = []
    needed = size
    while needed:
        chunk = pending.popleft()
        if len(chunk) > needed:
            pending.appendleft(chunk[needed:])
            chunk = chunk[:needed]
        taken.append(chunk)
        needed -= len(chunk)
    return b"".join(taken)


class S3StreamUploader:
    """
    Stream HTTP downloads into S3 objects in constant memory, verified, all-or-nothing.

    Memory: at most ``max_concurrency + 2`` parts (of :func:`choose_part_size` bytes: 8 MiB up to 78 GiB
    videos) are held at any time, whatever the video's size. Each part carries a checksum
    (``ChecksumCRC32`` or ``ChecksumSHA256``) that S3 verifies; objects smaller than one part go in a single
    ``PutObject`` with its checksum. With ``replace=False`` the write is conditional (``If-None-Match: *``),
    so a concurrent writer cannot be overwritten either.

    :param s3_client: a boto3 S3 client (``S3Hook(...).get_conn()``); it is thread-safe.
    :param part_size: preferred part size in bytes (raised when needed to stay within 10,000 parts).
    :param max_concurrency: parts uploaded at the same time while the download goes on.
    :param checksum_algorithm: ``"CRC32"`` (fast, the default) or ``"SHA256"``.
    """

    def __init__(
        self,
        s3_client: S3Client,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        checksum_algorithm: ChecksumAlgorithm = "CRC32",
    ) -> None:
        if checksum_algorithm not in ("CRC32", "SHA256"):
            raise ValueError(f"checksum_algorithm must be CRC32 or SHA256, not {checksum_algorithm!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.s3 = s3_client
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.checksum_algorithm = checksum_algorithm

    def upload(self, download: ResultBytes, target: S3Target, *, replace: bool = False) -> LandedObject:
        """
        Copy one download into ``target`` and return what landed.

        :param download: the video's bytes, e.g. an open ``hook.stream_result(url, kling_task_id=tid)``;
            it must raise rather than end early (the stream proves the body whole, resuming breaks).
        :param target: the destination object.
        :param replace: overwrite an existing object; when ``False`` an existing object of the same size
            (and the same ``kling-task-id``, if both carry one) is kept and reported as ``skipped``,
            a different one raises :class:`KlingS3KeyExistsError`.
        :raises KlingResultExpiredError: the result URL answered 403/404.
        :raises KlingResultDownloadError: the download stayed broken after the allowed attempts.
        :raises KlingS3UploadError: S3 rejected a part, the completion or the final size check.
        """
        if not replace:
            existing = self._existing(target, download.total)
            if existing is not None:
                return existing
        part_size = choose_part_size(download.total, self.part_size, self.max_concurrency)
        started = time.monotonic()
        landed = self._copy(download, target, part_size, replace=replace)
        elapsed = max(time.monotonic() - started, 1e-9)
        log.info(
            "Landed %s: %d bytes in %d part(s), %.1f MiB/s, %d download attempt(s), checksum %s",
            landed.uri,
            landed.size,
            landed.parts,
            landed.size / MiB / elapsed,
            download.attempts,
            landed.checksum,
        )
        return landed

    def check_destination(self, target: S3Target) -> None:
        """
        Raise before any download if ``target``'s key holds an object of another Kling task.

        Only what the key alone proves is refused here (both objects name their ``kling-task-id`` and the
        ids differ); whether an object of the same task is the same video is decided by :meth:`upload`,
        which knows the download's size.

        :param target: the destination object.
        :raises KlingS3KeyExistsError: the key holds another Kling task's object.
        :raises KlingS3UploadError: S3 could not be asked.
        """
        head = self._head(target)
        if head is not None and not self._same_task(head, target):
            raise self._exists_error(target, head, None)

    def _head(self, target: S3Target) -> Mapping[str, Any] | None:
        """``HeadObject`` of ``target`` with its checksum (``ChecksumMode``), or ``None`` if there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.s3.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED")
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise KlingS3UploadError(f"Cannot check whether {target.uri} exists: {error}") from error

    @staticmethod
    def _same_task(head: Mapping[str, Any], target: S3Target) -> bool:
        existing_task = head.get("Metadata", {}).get("kling-task-id")
        our_task = target.metadata.get("kling-task-id")
        return existing_task is None or our_task is None or existing_task == our_task

    @staticmethod
    def _exists_error(target: S3Target, head: Mapping[str, Any], size: int | None) -> KlingS3KeyExistsError:
        existing_task = head.get("Metadata", {}).get("kling-task-id")
        return KlingS3KeyExistsError(
            f"{target.uri} already exists ({head['ContentLength']} bytes, kling-task-id {existing_task}) and "
            f"differs from this result ({size if size is not None else 'unknown'} bytes, kling-task-id "
            f"{target.metadata.get('kling-task-id')}); set replace=True to overwrite it, or choose another "
            "s3_key"
        )

    def _existing(self, target: S3Target, size: int | None) -> LandedObject | None:
        """The object already at ``target`` if it is the same one; raise if it is a different one."""
        head = self._head(target)
        if head is None:
            return None
        if size is not None and head["ContentLength"] == size and self._same_task(head, target):
            checksum = _head_checksum(head)
            log.info(
                "%s already holds this %d-byte video (checksum %s): nothing to do (replace=False)",
                target.uri,
                size,
                checksum,
            )
            return LandedObject(
                bucket=target.bucket,
                key=target.key,
                size=size,
                etag=head.get("ETag", ""),
                checksum=checksum,
                parts=0,
                skipped=True,
                metadata=dict(head.get("Metadata", {})),
            )
        raise self._exists_error(target, head, size)

    @staticmethod
    def _parts(chunks: Iterator[bytes], part_size: int) -> Iterator[bytes]:
        """
        Cut the stream of chunks into parts of exactly ``part_size`` bytes (the last one shorter).

        Chunks are kept as they come and joined once per part, so a part costs one copy; no local variable
        keeps a part alive while the generator waits (memory stays at the parts the caller holds).
        """
        pending: deque[bytes] = deque()
        pending_size = 0
        for chunk in chunks:
            pending.append(chunk)
            pending_size += len(chunk)
            while pending_size >= part_size:
                pending_size -= part_size
                yield _take(pending, part_size)
        if pending_size:
            yield _take(pending, pending_size)

    def _copy(
        self, download: ResultBytes, target: S3Target, part_size: int, *, replace: bool
    ) -> LandedObject:
        parts = self._parts(iter(download), part_size)
        if download.total is not None and download.total > part_size:
            return self._put_multipart([], parts, target, download, replace=replace)
        head = list(itertools.islice(parts, 2))  # one part only: a single PutObject does
        if len(head) < 2:
            return self._put_single(head.pop() if head else b"", target, download, replace=replace)
        return self._put_multipart(head, parts, target, download, replace=replace)

    def _put_single(
        self, body: bytes, target: S3Target, download: ResultBytes, *, replace: bool
    ) -> LandedObject:
        from botocore.exceptions import ClientError

        checksum = _checksum(self.checksum_algorithm, body)
        arguments: dict[str, Any] = {
            "Bucket": target.bucket,
            "Key": target.key,
            "Body": body,
            "ContentType": target.content_type,
            "Metadata": dict(target.metadata),
            f"Checksum{self.checksum_algorithm}": checksum,
        }
        if not replace:
            arguments["IfNoneMatch"] = "*"
        try:
            response = self.s3.put_object(**arguments)
        except ClientError as error:
            if _error_code(error) == "PreconditionFailed":
                return self._lost_race(target, download.received)
            raise KlingS3UploadError(f"S3 rejected the upload of {target.uri}: {error}") from error
        self._verify_size(target, download.received)
        return LandedObject(
            bucket=target.bucket,
            key=target.key,
            size=download.received,
            etag=response.get("ETag", ""),
            checksum=_response_checksum(cast("Mapping[str, Any]", response), self.checksum_algorithm)
            or checksum,
            parts=1,
            metadata=dict(target.metadata),
        )

    def _put_multipart(
        self,
        head: list[bytes],
        rest: Iterator[bytes],
        target: S3Target,
        download: ResultBytes,
        *,
        replace: bool,
    ) -> LandedObject:
        from botocore.exceptions import ClientError

        try:
            created = self.s3.create_multipart_upload(
                Bucket=target.bucket,
                Key=target.key,
                ContentType=target.content_type,
                Metadata=dict(target.metadata),
                ChecksumAlgorithm=self.checksum_algorithm,
            )
        except ClientError as error:
            raise KlingS3UploadError(f"S3 refused to start the upload of {target.uri}: {error}") from error
        upload_id = created["UploadId"]
        try:
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="kling-s3-part") as pool:
                try:
                    completed = self._upload_parts(pool, upload_id, target, head, rest)
                finally:
                    # On a failure, wait for the parts in flight (so the abort below leaves none behind).
                    pool.shutdown(wait=True, cancel_futures=True)
            arguments: dict[str, Any] = {
                "Bucket": target.bucket,
                "Key": target.key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": completed},
            }
            if not replace:
                arguments["IfNoneMatch"] = "*"
            response = self.s3.complete_multipart_upload(**arguments)
            self._verify_size(target, download.received)
        except BaseException as error:
            self._abort(target, upload_id)
            if isinstance(error, ClientError):
                if _error_code(error) == "PreconditionFailed":
                    return self._lost_race(target, download.received)
                raise KlingS3UploadError(f"S3 rejected the upload of {target.uri}: {error}") from error
            raise
        return LandedObject(
            bucket=target.bucket,
            key=target.key,
            size=download.received,
            etag=response.get("ETag", ""),
            checksum=_response_checksum(cast("Mapping[str, Any]", response), self.checksum_algorithm),
            parts=len(completed),
            metadata=dict(target.metadata),
        )

    def _upload_parts(
        self,
        pool: ThreadPoolExecutor,
        upload_id: str,
        target: S3Target,
        head: list[bytes],
        rest: Iterator[bytes],
    ) -> list[dict[str, Any]]:
        """Upload the parts, at most ``max_concurrency`` at a time; return them in order for completion."""
        in_flight: set[Future[dict[str, Any]]] = set()
        done_parts: list[dict[str, Any]] = []

        def collect(block: bool) -> None:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED, timeout=None if block else 0)
            for future in finished:
                in_flight.discard(future)
                done_parts.append(future.result())  # re-raises the part's error

        def parts() -> Iterator[bytes]:
            while head:  # hand the parts over without keeping a reference
                yield head.pop(0)
            yield from rest

        for number, body in enumerate(parts(), start=1):
            if number > S3_MAX_PARTS:
                raise KlingS3UploadError(f"{target.uri} needs more than {S3_MAX_PARTS} parts")
            while len(in_flight) >= self.max_concurrency:
                collect(block=True)
            in_flight.add(pool.submit(self._upload_part, upload_id, target, number, body))
            del body
            collect(block=False)
        while in_flight:
            collect(block=True)
        return sorted(done_parts, key=lambda part: int(part["PartNumber"]))

    def _upload_part(self, upload_id: str, target: S3Target, number: int, body: bytes) -> dict[str, Any]:
        checksum = _checksum(self.checksum_algorithm, body)
        arguments: dict[str, Any] = {
            "Bucket": target.bucket,
            "Key": target.key,
            "UploadId": upload_id,
            "PartNumber": number,
            "Body": body,
            f"Checksum{self.checksum_algorithm}": checksum,
        }
        response = self.s3.upload_part(**arguments)
        log.debug("Uploaded part %d of %s (%d bytes)", number, target.uri, len(body))
        return {
            "PartNumber": number,
            "ETag": response["ETag"],
            f"Checksum{self.checksum_algorithm}": _response_checksum(
                cast("Mapping[str, Any]", response), self.checksum_algorithm
            )
            or checksum,
        }

    def _abort(self, target: S3Target, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=target.bucket, Key=target.key, UploadId=upload_id)
            log.warning("Aborted the multipart upload of %s: no partial object is left", target.uri)
        except Exception:
            log.exception("Could not abort multipart upload %s of %s", upload_id, target.uri)

    def _lost_race(self, target: S3Target, size: int) -> LandedObject:
        """Another writer created the key while we uploaded (``If-None-Match`` failed)."""
        existing = self._existing(target, size)
        if existing is None:  # deleted again in between: report it rather than loop
            raise KlingS3KeyExistsError(f"{target.uri} was created and removed by another writer meanwhile")
        return existing

    def _verify_size(self, target: S3Target, size: int) -> None:
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=target.bucket, Key=target.key)
        except ClientError as error:
            raise KlingS3UploadError(
                f"Cannot check the size of {target.uri} after the upload: {error}"
            ) from error
        if head["ContentLength"] != size:
            self.s3.delete_object(Bucket=target.bucket, Key=target.key)
            raise KlingS3UploadError(
                f"{target.uri} holds {head['ContentLength']} bytes after the upload, expected {size}: deleted"
            )


def check_s3_key(key: str) -> str:
    """
    Return an object key built from templates, or raise if it could land somewhere unintended.

    Refused: an empty key, a leading ``/``, empty segments (``a//b``), ``.`` or ``..`` segments (S3 keeps
    them literally, but tools that map keys to paths do not), and control characters.

    :param key: the rendered key.
    :raises ValueError: the key is one of those.
    """
    problem = None
    if not key:
        problem = "it is empty"
    elif key.startswith("/"):
        problem = "it starts with '/'"
    elif any(segment in ("", ".", "..") for segment in key.split("/")[:-1]) or key.split("/")[-1] in (
        ".",
        "..",
    ):
        problem = "it has an empty, '.' or '..' segment"
    elif any(ord(char) < 32 or ord(char) == 127 for char in key):
        problem = "it holds a control character"
    elif len(key.encode()) > 1024:
        problem = "it is longer than S3's 1,024 bytes"
    if problem:
        raise ValueError(f"s3_key {key[:200]!r} cannot be used: {problem}")
    return key


def _parse_bool(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"replace must be a boolean, not {value!r}")


class KlingToS3Operator(BaseOperator):
    """
    Copy every result video of a finished Kling task into S3, streamed in constant memory and verified.

    The download (``KlingHook.stream_result``) flows straight into an S3 multipart upload (``S3Hook``'s
    client) with a checksum per part; the byte count is checked against ``Content-Length``; a broken
    download is resumed with ``Range`` up to ``max_download_attempts`` times; any failure aborts the upload,
    so S3 never holds a partial object or an unfinished upload. Each object gets ``Content-Type: video/mp4``
    and the metadata ``kling-task-id``, ``kling-model``, ``kling-usage-seconds``, ``kling-written-by``
    (:data:`WRITER_METADATA_KEY`) plus ``metadata``. One Asset event per object is emitted on the
    ``AssetAlias`` ``asset_alias`` (its ``extra`` holds the metadata as rendered, Unicode kept, the size and
    the checksum), so DAGs scheduled on that alias run on new videos. Each object is announced once, by the
    task instance that wrote it: a copy skipped because the object is already there emits an event only if
    an earlier try of this task instance wrote it (that try failed, so its events were never recorded).

    Result URLs expire after about 24 hours: run this soon after the task finishes. What can never pass (an
    expired URL, a failed task, another object at a key, an invalid argument) fails without retries; see
    :meth:`execute`.

    :param kling_task_id: the Kling task whose results to copy; it must have succeeded. (templated)
    :param s3_bucket: the destination bucket; ``None`` when ``s3_key`` is a full ``s3://`` URL. (templated)
    :param s3_key: the destination key; ``{index}`` is replaced by the result's index (from 0) and
        ``{kling_task_id}`` by the task id. Required to contain ``{index}`` when the task has several
        results. The default, ``kling/<dag_id>/{kling_task_id}/{index}.mp4``, never collides between runs,
        map indexes or results, and a retried copy lands on the same keys. (templated)
    :param aws_conn_id: the Airflow ``aws`` connection. (templated)
    :param kling_conn_id: the Airflow Kling connection. (templated)
    :param replace: overwrite existing objects. When ``False`` (the default), an existing object of the same
        task and size is kept (an idempotent retry succeeds; its checksum is read back) and a different one
        fails the task without retries; keys are checked before any download. (templated)
    :param metadata: extra S3 metadata, e.g. ``{"prompt-sha256": "{{ ... }}"}``; keys must not start with
        ``kling-``; values that are not printable ASCII are stored RFC 2047-encoded in S3 (the Asset
        events carry them as rendered); at most 2 KB in all (S3's limit). (templated)
    :param asset_alias: name of the ``AssetAlias`` outlet the Asset events go to (``None``: no events).
    :param part_size: preferred multipart part size in bytes (default 8 MiB; raised for very large videos
        to stay within 10,000 parts).
    :param max_concurrency: parts uploaded at once; memory holds at most ``max_concurrency + 2`` parts.
    :param max_download_attempts: requests per result before the copy fails (first try + ``Range`` resumes).
    :param max_download_bytes: the largest result accepted, in bytes (default 1 GiB; a 15 s 1080p video is
        a few tens of MiB): a CDN that sends more is cut off, and nothing lands.
    :param download_timeout: seconds one result's download may take in all, resumes included (default
        1800).
    :param checksum_algorithm: ``"CRC32"`` or ``"SHA256"``, verified by S3 for every part.
    :param download_retry_delay: seconds before the first ``Range`` resume of a broken download, doubling
        after each.
    :param verify: TLS verification for S3 (as ``S3Hook``'s ``verify``).
    :return: the ``s3://`` URIs, in the order of the task's ``urls``.
    """

    template_fields: Sequence[str] = (
        "kling_task_id",
        "s3_bucket",
        "s3_key",
        "aws_conn_id",
        "kling_conn_id",
        "replace",
        "metadata",
    )
    template_fields_renderers = {"metadata": "json"}
    ui_color = "#f4a460"

    def __init__(
        self,
        *,
        kling_task_id: str,
        s3_bucket: str | None = None,
        s3_key: str = DEFAULT_S3_KEY,
        aws_conn_id: str | None = "aws_default",
        kling_conn_id: str = DEFAULT_CONN_ID,
        replace: bool | str = False,
        metadata: dict[str, Any] | None = None,
        asset_alias: str | None = DEFAULT_ASSET_ALIAS,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        max_download_attempts: int = 3,
        checksum_algorithm: ChecksumAlgorithm = "CRC32",
        download_retry_delay: float = 1.0,
        max_download_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        verify: str | bool | None = None,
        **kwargs: Any,
    ) -> None:
        if asset_alias:
            outlets = kwargs.pop("outlets", None)
            if outlets is None:
                outlets = []
            elif not isinstance(outlets, list | tuple):
                outlets = [outlets]
            kwargs["outlets"] = [*outlets, AssetAlias(asset_alias)]
        super().__init__(**kwargs)
        self.kling_task_id = kling_task_id
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.aws_conn_id = aws_conn_id
        self.kling_conn_id = kling_conn_id
        self.replace = replace
        self.metadata = metadata or {}
        self.asset_alias = asset_alias
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.max_download_attempts = max_download_attempts
        self.checksum_algorithm: ChecksumAlgorithm = checksum_algorithm
        self.download_retry_delay = download_retry_delay
        self.download_limits = DownloadLimits(
            max_bytes=max_download_bytes,
            timeout=download_timeout,
            max_attempts=max_download_attempts,
            retry_delay=download_retry_delay,
        )
        self.verify = verify
        self.landed: list[LandedObject] = []
        self._source_urls: list[str] = []

    @cached_property
    def kling_hook(self) -> KlingHook:
        """The hook of the Kling connection."""
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(kling_conn_id=self.kling_conn_id)

    @cached_property
    def s3_hook(self) -> S3Hook:
        """The hook of the AWS connection."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, verify=self.verify)

    @cached_property
    def uploader(self) -> S3StreamUploader:
        """The streaming upload engine, on the AWS connection's S3 client."""
        return S3StreamUploader(
            self.s3_hook.get_conn(),
            part_size=self.part_size,
            max_concurrency=self.max_concurrency,
            checksum_algorithm=self.checksum_algorithm,
        )

    def execute(self, context: Context) -> list[str]:
        """
        Copy every result of the task into S3 and return the ``s3://`` URIs, in the order of ``urls``.

        What can never pass raises :class:`~airflow.exceptions.AirflowFailException` (no retries), chained
        from the provider's error: an invalid ``kling_task_id``, key, ``metadata`` or ``replace``; a failed
        task, or one that succeeded without results; an expired result URL; another object at a key with
        ``replace=False``. A task that has not finished raises
        :class:`~airflow_provider_kling.exceptions.KlingTaskNotReadyError`, retried: it may finish.
        """
        try:
            kling_task_id, replace = self._checked_arguments()
            task = self.kling_hook.get_task(kling_task_id)
            targets = self._targets(task, writer=self._writer(context))
            if not replace:
                for target in targets:  # refuse another task's object before any download
                    self.uploader.check_destination(target)
            self._source_urls, self.landed = list(task.urls), []
            for url, target in zip(task.urls, targets, strict=True):
                with self._download(url, task.task_id) as download:
                    landed = self.uploader.upload(download, target, replace=replace)
                self.landed.append(landed)
                self._record(context, landed, target)
            uris = [landed.uri for landed in self.landed]
            self._keep_kling_record(context, task, uris)
            return uris
        except (KlingTaskFailedError, KlingResultExpiredError, KlingS3KeyExistsError) as error:
            raise AirflowFailException(str(error)) from error
        finally:
            self._close_clients()

    def _keep_kling_record(self, context: Context, task: KlingTask, uris: list[str]) -> None:
        """Write the record of the Kling view (``airflow_provider_kling.records``): the landed objects."""
        from airflow_provider_kling.records import landing_record, push_record

        record = landing_record(
            result=task.as_result(),
            s3_uris=uris,
            kling_conn_id=self.kling_conn_id,
            aws_conn_id=self.aws_conn_id,
        )
        push_record(context, record)

    def _checked_arguments(self) -> tuple[str, bool]:
        """The rendered ``kling_task_id`` and ``replace``, checked: wrong ones can never pass."""
        from airflow_provider_kling.models import check_kling_task_id

        try:
            return check_kling_task_id(self.kling_task_id), _parse_bool(self.replace)
        except ValueError as error:
            raise AirflowFailException(str(error)) from error

    def _targets(self, task: KlingTask, *, writer: str) -> list[S3Target]:
        """:meth:`targets_for`, with what can never pass sent down the no-retry path."""
        try:
            return self.targets_for(task, writer=writer)
        except KlingTaskNotReadyError as error:
            if task.status.is_terminal:  # a Success without result URLs stays one
                raise AirflowFailException(str(error)) from error
            raise  # still running: a retry may find it finished
        except ValueError as error:  # the key layout or the metadata, as rendered
            raise AirflowFailException(str(error)) from error

    def _download(self, url: str, kling_task_id: str) -> KlingResultStream:
        limits = self.download_limits
        return self.kling_hook.stream_result(
            url,
            kling_task_id=kling_task_id,
            max_bytes=limits.max_bytes,
            timeout=limits.timeout,
            max_attempts=limits.max_attempts,
            retry_delay=limits.retry_delay,
        )

    def _writer(self, context: Context) -> str:
        """A digest naming this task instance (DAG, run, task, map index): the same for all its tries."""
        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or self.dag_id
        run_id = context.get("run_id") or getattr(ti, "run_id", None)
        map_index = getattr(ti, "map_index", -1)
        identity = "\n".join(str(part) for part in (dag_id, run_id, self.task_id, map_index))
        return hashlib.sha256(identity.encode("utf-8")).hexdigest()

    def _close_clients(self) -> None:
        """Close the HTTP connections the hooks opened (a later call opens new ones)."""
        if "kling_hook" in self.__dict__:
            self.kling_hook.close()
        if "uploader" in self.__dict__:
            self.uploader.s3.close()

    def targets_for(self, task: KlingTask, *, writer: str | None = None) -> list[S3Target]:
        """
        Return where each result of ``task`` goes, checking the task and the key layout first.

        :param task: the task as the status endpoint reports it.
        :param writer: the digest of the task instance that writes the objects, stored as the S3 metadata
            :data:`WRITER_METADATA_KEY` (not in the Asset events); ``None``: not stored.
        :raises KlingTaskFailedError: the task failed.
        :raises KlingTaskNotReadyError: the task is not finished, or has no result URLs.
        :raises ValueError: several results but no ``{index}`` in the key, or invalid metadata.
        """
        from airflow_provider_kling.models import TaskStatus

        if task.status == TaskStatus.FAILURE:
            raise KlingTaskFailedError(task.task_id, task.error_message)
        if task.status != TaskStatus.SUCCESS:
            raise KlingTaskNotReadyError(
                f"Kling task {task.task_id} is {task.status.value}, not Success: wait for it "
                "(KlingTaskSensor or the submit operator) before copying its results"
            )
        if not task.urls:
            raise KlingTaskNotReadyError(f"Kling task {task.task_id} succeeded but reported no result URLs")
        if len(task.urls) > 1 and "{index}" not in self.s3_key:
            raise ValueError(
                f"Kling task {task.task_id} has {len(task.urls)} results: s3_key must contain '{{index}}' so "
                f"they do not overwrite each other (s3_key={self.s3_key!r})"
            )
        kling = {"kling-task-id": task.task_id, "kling-model": MODEL_NAME}
        if task.usage_seconds is not None:
            kling["kling-usage-seconds"] = str(task.usage_seconds)
        rendered = render_metadata(kling, self.metadata)
        metadata = build_metadata({**kling, WRITER_METADATA_KEY: writer} if writer else kling, self.metadata)
        targets = []
        for index in range(len(task.urls)):
            key = self.s3_key.replace("{index}", str(index)).replace("{kling_task_id}", task.task_id)
            if self.s3_bucket is None:
                from airflow.providers.amazon.aws.hooks.s3 import S3Hook

                bucket, key = S3Hook.parse_s3_url(key)
            else:
                bucket = self.s3_bucket
                if urlsplit(key).scheme:
                    raise ValueError("s3_key must be a key, not a URL, when s3_bucket is given")
            targets.append(
                S3Target(
                    bucket=bucket,
                    key=check_s3_key(key),
                    content_type=VIDEO_CONTENT_TYPE,
                    metadata=metadata,
                    rendered_metadata=rendered,
                )
            )
        return targets

    def _record(self, context: Context, landed: LandedObject, target: S3Target) -> None:
        """
        Emit the object's Asset event (on the alias) and report it to hook-level lineage.

        Each object is announced by the task instance that wrote it: a copy skipped because the object is
        already there emits an event only if this task instance wrote it (an earlier try that did not
        succeed, so Airflow never recorded its events); one landed by another task instance (another run,
        map index or DAG) was announced by it, and a second event would re-trigger downstream DAGs.
        """
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        get_hook_lineage_collector().add_output_asset(  # type: ignore[no-untyped-call]
            context=self.s3_hook, scheme="s3", asset_kwargs={"bucket": landed.bucket, "key": landed.key}
        )
        if not self.asset_alias:
            return
        writer = target.metadata.get(WRITER_METADATA_KEY)
        if landed.skipped and (writer is None or landed.metadata.get(WRITER_METADATA_KEY) != writer):
            self.log.info(
                "No Asset event for %s: it was landed and announced by another task instance", landed.uri
            )
            return
        extra: dict[str, Any] = {
            **(target.rendered_metadata or target.metadata),
            "content-type": target.content_type,
            "size-bytes": landed.size,
            "checksum": landed.checksum,
            "skipped": landed.skipped,
        }
        context["outlet_events"][AssetAlias(self.asset_alias)].add(Asset(uri=landed.uri), extra=extra)

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """
        Describe the copy for OpenLineage: result URLs in, S3 objects out.

        Returns ``None`` when the OpenLineage provider is not installed.

        :param task_instance: the finished task instance (unused: the operator remembers what it landed).
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        inputs = []
        for url in self._source_urls:
            parts = urlsplit(url)
            # Result URLs are signed and temporary: the query string is not part of the dataset's name.
            inputs.append(Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path or "/"))
        outputs = [Dataset(namespace=f"s3://{obj.bucket}", name=obj.key) for obj in self.landed]
        return OperatorLineage(inputs=inputs, outputs=outputs)


__all__ = [
    "DEFAULT_ASSET_ALIAS",
    "DEFAULT_S3_KEY",
    "WRITER_METADATA_KEY",
    "KlingToS3Operator",
    "LandedObject",
    "ResultBytes",
    "S3StreamUploader",
    "S3Target",
    "build_metadata",
    "check_s3_key",
    "choose_part_size",
    "encode_metadata_value",
    "render_metadata",
]
