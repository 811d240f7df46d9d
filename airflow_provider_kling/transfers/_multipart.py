"""
The streaming S3 multipart upload engine of the transfer: :class:`S3StreamUploader` and its part sizing.

It streams a download (an open :meth:`KlingHook.stream_result
<airflow_provider_kling.hooks.kling.KlingHook.stream_result>`, or any :class:`ResultBytes`) straight into an
S3 multipart upload, one part in memory per upload slot, whatever the video's size. Every part carries a
CRC32 (or SHA-256) checksum that the S3 server verifies; the byte count is checked against S3's ``HEAD``;
any failure aborts the multipart upload, so no partial object and no unfinished upload is left.

Why not ``S3Hook.load_file_obj`` or boto3's transfer manager (s3transfer, ``upload_fileobj``), which also
cut a stream into parts:

* conditional writes: ``replace=False`` is one atomic check, ``If-None-Match: *`` on the ``PutObject`` or
  the ``CompleteMultipartUpload``, so a concurrent writer is never overwritten and a lost race is told
  apart from a failure. ``load_file_obj(replace=False)`` looks for the key with a ``HEAD`` and then
  uploads (a window for a race), and s3transfer accepts no ``IfNoneMatch`` among its upload arguments;
* ``Range`` resume of the source stream: the video comes from a temporary URL as a one-pass stream that
  resumes a broken download itself with a ``Range`` request and proves the body whole
  (:class:`~airflow_provider_kling.hooks._download.KlingResultStream`); the engine reads it chunk by chunk
  and uses its announced size (part sizing, the final size check), where s3transfer wants a file object;
* per-part checksums: each part's CRC32 / SHA-256 is computed from the very bytes held here and sent with
  the part, so S3 rejects a part that differs, and the checksum S3 reports back goes in the Asset event;
* bounded memory: at most ``max_concurrency + 2`` parts are alive at once, tied to the operator's one
  concurrency setting (s3transfer keeps up to ``max_in_memory_upload_chunks``, 10 parts by default, besides
  its own queues and threads).

This module is imported only when a copy runs (``KlingToS3Operator.uploader``), not when a DAG file is
parsed.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import math
import time
import zlib
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, cast

from airflow_provider_kling.exceptions import KlingS3KeyExistsError, KlingS3UploadError
from airflow_provider_kling.transfers._s3_objects import (
    DEFAULT_PART_SIZE,
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
    ChecksumAlgorithm,
    LandedObject,
    MiB,
    S3Target,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: The checksums S3 may report for an object, in the order they are read.
_CHECKSUM_NAMES = ("ChecksumCRC32", "ChecksumSHA256", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1")


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


__all__ = ["ResultBytes", "S3StreamUploader", "choose_part_size"]
