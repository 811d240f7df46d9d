"""
Resolve a request's ``s3://`` inputs before it is submitted: check the files (R18, R21), then send them.

Users keep reference images and videos in S3; the Kling API cannot read ``s3://`` URLs. For every
``parameters.image_list[i].image_url`` and ``parameters.video_list[i].video_url`` that is an ``s3://bucket/key``
URL, :func:`resolve_s3_inputs`:

1. reads the object's size (``HEAD``) and only its header bytes with ranged ``GET`` requests: the first
   64 KiB, and for an MP4/MOV whose ``moov`` box sits at the end, the box headers on the way and the
   ``moov`` box itself;
2. applies the pure checks of :mod:`airflow_provider_kling.media`: R18 for images (PNG/JPEG, at most 10 MiB,
   at least 300 px each side, aspect ratio 1:2.5 to 2.5:1), R21 for videos (MP4/MOV, at least 3 s and at
   most 10 s as a ``feature`` reference, 720 to 2160 px, 24 to 60 fps, at most 200 MiB);
3. if every input passes, replaces images by their bare base64 (the whole object, read once, at most
   10 MiB; or a presigned URL with ``inline_images=False``) and videos by a presigned ``GET`` URL valid for
   ``presign_seconds`` (default :data:`DEFAULT_PRESIGN_SECONDS`, 6 hours: the API fetches inputs when the
   task runs, which may be after a queue; AWS allows at most 7 days with SigV4, and a URL signed with
   temporary credentials dies with them).

Any problem, on any input, raises :class:`KlingS3InputError` listing them all, one line each, starting with
the rule ID and naming the field::

    R18 parameters.image_list[0].image_url: s3://b/k.png is 200x200 px, width and height must each be at
    least 300 px

Nothing is submitted then: the submit operator resolves inputs before its first API call. Presigned URLs are
bearer credentials for their lifetime: they are never logged here.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_kling import media
from airflow_provider_kling.exceptions import KlingS3InputError, MediaHeaderError, NeedMoreBytesError
from airflow_provider_kling.models import ReferType

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.models import KlingVideoRequest

log = logging.getLogger(__name__)

#: How long presigned input URLs stay valid by default, in seconds (6 hours).
DEFAULT_PRESIGN_SECONDS = 6 * 3600
#: The longest validity S3 allows for a SigV4 presigned URL (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: The most header bytes read from an image before giving up (a JPEG's metadata precedes its frame header).
MAX_IMAGE_HEADER_BYTES = 4 * 1024 * 1024
#: The largest ``moov`` box read from a video (it is usually well under 1 MiB for a 200 MiB file).
MAX_MOOV_BYTES = 64 * 1024 * 1024
#: The most top-level boxes walked to find the ``moov`` box.
MAX_BOX_HOPS = 256


class _Unusable(Exception):
    """An input cannot be used: the message is the phrase after ``<rule> <field>: ``."""


@dataclass
class _S3Object:
    """One object, read by byte ranges that must all come from the same version (``If-Match``)."""

    client: S3Client
    url: str
    bucket: str
    key: str
    size: int
    etag: str

    def read(self, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)`` (clipped to the object)."""
        end = min(end, self.size)
        if end <= start:
            return b""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}", IfMatch=self.etag
            )
            return response["Body"].read()
        except ClientError as error:
            raise _Unusable(f"{self.url} cannot be read: {_describe(error)}") from error


def _describe(error: Exception) -> str:
    response: dict[str, Any] = getattr(error, "response", {}) or {}
    code = response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if str(code) in ("404", "NoSuchKey", "NotFound"):
        return "no such object (404)"
    if str(code) in ("403", "AccessDenied"):
        return "access denied (403): check the AWS connection's permissions"
    if str(code) in ("412", "PreconditionFailed"):
        return "the object changed while it was being checked: retry"
    return f"{code}: {error}"


def _parse_s3_url(url: str) -> tuple[str, str]:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url.strip())
    return parts.netloc, unquote(parts.path.lstrip("/"))


def _open(client: S3Client, url: str) -> _S3Object:
    from botocore.exceptions import ClientError

    bucket, key = _parse_s3_url(url)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise _Unusable(f"{url} cannot be read: {_describe(error)}") from error
    return _S3Object(client, url, bucket, key, int(head["ContentLength"]), str(head.get("ETag", "")))


def _image_info(obj: _S3Object) -> tuple[media.ImageInfo, bytes]:
    """Read the image's header with as few bytes as it takes; return it and the bytes read."""
    data = obj.read(0, media.HEADER_PREFIX_BYTES)
    while True:
        try:
            return media.read_image_info(data), data
        except NeedMoreBytesError as more:
            if len(data) >= obj.size:
                raise _Unusable(f"{obj.url} is a truncated image ({obj.size} bytes)") from None
            if more.end > MAX_IMAGE_HEADER_BYTES:
                raise _Unusable(
                    f"{obj.url} has no image frame header in its first {MAX_IMAGE_HEADER_BYTES} bytes"
                ) from None
            data += obj.read(len(data), min(MAX_IMAGE_HEADER_BYTES, max(more.end, 2 * len(data))))
        except MediaHeaderError as error:
            raise _Unusable(f"{obj.url}: {error}") from None


def _video_info(obj: _S3Object) -> media.VideoInfo:
    """Read the video's ``ftyp`` and ``moov`` boxes with ranged reads, wherever ``moov`` lies."""
    prefix = obj.read(0, media.HEADER_PREFIX_BYTES)
    try:
        try:
            return media.read_video_info(prefix)
        except NeedMoreBytesError:
            pass
        data, offset, start = prefix, 0, 0
        for _ in range(MAX_BOX_HOPS):
            try:
                moov_start, moov_end = media.find_moov_range(data, obj.size, data_offset=offset, start=start)
                break
            except NeedMoreBytesError as more:
                start = offset = more.offset
                data = obj.read(more.offset, max(more.end, more.offset + 16))
        else:
            raise _Unusable(f"{obj.url}: no moov box within the first {MAX_BOX_HOPS} boxes")
        if moov_end - moov_start > MAX_MOOV_BYTES:
            raise _Unusable(
                f"{obj.url} has a {moov_end - moov_start}-byte moov box, more than this check reads "
                f"({MAX_MOOV_BYTES})"
            )
        inside = moov_end <= len(prefix)
        moov = prefix[moov_start:moov_end] if inside else obj.read(moov_start, moov_end)
        return media.read_video_info(prefix, moov=moov)
    except NeedMoreBytesError as more:
        raise _Unusable(f"{obj.url} is a truncated video ({more.what} runs past its end)") from None
    except MediaHeaderError as error:
        raise _Unusable(f"{obj.url}: {error}") from None


def _check_image(obj: _S3Object) -> bytes:
    """Check an image against R18; return the bytes read so far (the whole file when it is small)."""
    info, data = _image_info(obj)
    problems = media.check_image(info, obj.size)
    if problems:
        raise _Unusable(f"{obj.url} is {'; '.join(problems)}")
    return data


def _check_video(obj: _S3Object, refer_type: ReferType | None) -> None:
    info = _video_info(obj)
    problems = media.check_video(info, obj.size, feature_reference=refer_type is ReferType.FEATURE)
    if problems:
        raise _Unusable(f"{obj.url} is {'; '.join(problems)}")


def _presign(obj: _S3Object, seconds: int) -> str:
    url = obj.client.generate_presigned_url(
        "get_object", Params={"Bucket": obj.bucket, "Key": obj.key}, ExpiresIn=seconds
    )
    log.info("Presigned %s for %.1f h (the URL itself is not logged)", obj.url, seconds / 3600)
    return url


def resolve_s3_inputs(
    request: KlingVideoRequest,
    *,
    aws_conn_id: str | None = "aws_default",
    presign_seconds: int = DEFAULT_PRESIGN_SECONDS,
    inline_images: bool = True,
) -> KlingVideoRequest:
    """
    Check the request's ``s3://`` inputs (R18, R21) and return a validated copy with none left.

    Only object headers are read to check; nothing is sent to the Kling API here. A request without
    ``s3://`` inputs is returned as it is, without touching S3.

    :param request: the request, whose inputs may be ``s3://bucket/key`` URLs.
    :param aws_conn_id: the Airflow ``aws`` connection to read the objects and sign URLs with.
    :param presign_seconds: how long the presigned URLs stay valid (default 6 h, at most 7 days).
    :param inline_images: send images as bare base64 (default; at most 10 MiB each, by R18) rather than as
        presigned URLs.
    :return: a validated copy of the request with images as base64 (or presigned URLs) and videos as
        presigned URLs.
    :raises KlingS3InputError: an input is missing, unreadable or breaks R18/R21 (all problems listed).
    :raises ValueError: ``presign_seconds`` is out of range.
    """
    inputs = request.s3_input_urls
    if not inputs:
        return request
    if not 1 <= presign_seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(
            f"presign_seconds must be 1 to {MAX_PRESIGN_SECONDS} (7 days), not {presign_seconds}"
        )
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client: S3Client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
    try:
        return _resolve(request, inputs, client, presign_seconds=presign_seconds, inline_images=inline_images)
    finally:
        client.close()


def _resolve(
    request: KlingVideoRequest,
    inputs: dict[str, str],
    client: S3Client,
    *,
    presign_seconds: int,
    inline_images: bool,
) -> KlingVideoRequest:
    refer_types = {
        f"parameters.video_list[{position}].video_url": video.refer_type
        for position, video in enumerate(request.parameters.video_list or ())
    }
    problems: list[str] = []
    checked: dict[str, tuple[_S3Object, bytes | None]] = {}
    for path, url in inputs.items():
        is_image = path.endswith(".image_url")
        rule = "R18" if is_image else "R21"
        try:
            obj = _open(client, url)
            if is_image:
                checked[path] = (obj, _check_image(obj))
            else:
                _check_video(obj, refer_types.get(path))
                checked[path] = (obj, None)
        except _Unusable as problem:
            problems.append(f"{rule} {path}: {problem}")
    if problems:
        raise KlingS3InputError(problems)

    replacements: dict[str, str] = {}
    for path, (obj, head) in checked.items():
        if path.endswith(".image_url") and inline_images:
            try:
                data = head if head is not None and len(head) >= obj.size else obj.read(0, obj.size)
            except _Unusable as problem:
                raise KlingS3InputError([f"R18 {path}: {problem}"]) from None
            replacements[path] = base64.b64encode(data).decode("ascii")
            log.info("Inlined %s as base64 (%d bytes)", obj.url, obj.size)
        else:
            replacements[path] = _presign(obj, presign_seconds)
    return request.with_input_urls(replacements)
