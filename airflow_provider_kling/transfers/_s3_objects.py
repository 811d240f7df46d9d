"""
What a landing writes to S3: the part and metadata limits, the target, the landed object, the metadata.

The light half of the transfer's engine, shared by the operator,
:class:`~airflow_provider_kling.transfers.kling_to_s3.KlingToS3Operator` (it builds the targets when it
runs, and takes :data:`DEFAULT_PART_SIZE` as a default at parse time), and by the multipart upload engine
in :mod:`airflow_provider_kling.transfers._multipart` (it writes them). Only the standard library is
imported, so a DAG file pays next to nothing for this module; the engine is imported only when a copy runs.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

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

#: The checksums the engine computes for every part.
ChecksumAlgorithm = Literal["CRC32", "SHA256"]

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
    An object written (or found already there) by the upload engine.

    The engine is :class:`~airflow_provider_kling.transfers._multipart.S3StreamUploader`.

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


__all__ = [
    "DEFAULT_PART_SIZE",
    "S3_MAX_METADATA_BYTES",
    "S3_MAX_PARTS",
    "S3_MAX_PART_SIZE",
    "S3_MIN_PART_SIZE",
    "VIDEO_CONTENT_TYPE",
    "ChecksumAlgorithm",
    "LandedObject",
    "MiB",
    "S3Target",
    "build_metadata",
    "encode_metadata_value",
    "render_metadata",
]
