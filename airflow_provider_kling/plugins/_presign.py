"""
Short-lived presigned GET URLs of landed videos, signed locally (no S3 request per video).

The Kling view never puts a presigned URL in a page: a ``<video>`` points at the app's ``video`` endpoint,
which checks the user's DAG access on every request and only then redirects to a URL from
:meth:`Presigner.url`, valid :data:`PRESIGN_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable

#: How long a presigned URL is valid: 10 minutes (the issue allows at most 15).
PRESIGN_SECONDS: Final = 600
#: How long an S3 client (built from the Airflow connection) is reused before the connection is read again.
CLIENT_REUSE_SECONDS: Final = 300.0


def split_s3_uri(uri: str) -> tuple[str, str]:
    """
    Return the bucket and key of ``s3://bucket/key``; ``ValueError`` for anything else.

    :param uri: an ``s3://`` URI.
    """
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ValueError(f"not an s3:// object URI: {uri[:200]!r}")
    return parts.netloc, key


def s3_client_for(aws_conn_id: str | None) -> Any:
    """
    Build a boto3 S3 client from an Airflow AWS connection (``S3Hook``), signing with Signature Version 4.

    Version 4 is what every region and S3-compatible store accepts for presigned URLs, and it bounds their
    life itself (``X-Amz-Expires``).

    :param aws_conn_id: the connection id (``None``: boto3's default credentials).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    return S3Hook(aws_conn_id=aws_conn_id, config=Config(signature_version="s3v4")).get_conn()


class Presigner:
    """
    Presign GET URLs with one S3 client per AWS connection, reused for :data:`CLIENT_REUSE_SECONDS`.

    :param client_factory: builds a client for a connection id.
    :param expires_in: validity of each URL, in seconds (at most 900).
    :param clock: monotonic time source.
    """

    def __init__(
        self,
        client_factory: Callable[[str | None], Any] = s3_client_for,
        *,
        expires_in: int = PRESIGN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < expires_in <= 900:
            raise ValueError("presigned URLs must be valid for 1 to 900 seconds")
        self.client_factory = client_factory
        self.expires_in = expires_in
        self.clock = clock
        self._clients: dict[str | None, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _client(self, aws_conn_id: str | None) -> Any:
        with self._lock:
            cached = self._clients.get(aws_conn_id)
            if cached is not None and self.clock() - cached[0] < CLIENT_REUSE_SECONDS:
                return cached[1]
        client = self.client_factory(aws_conn_id)
        with self._lock:
            self._clients[aws_conn_id] = (self.clock(), client)
        return client

    def url(self, uri: str, aws_conn_id: str | None) -> str:
        """
        Return a presigned GET URL of the object ``uri``, valid :attr:`expires_in` seconds.

        :param uri: ``s3://bucket/key``.
        :param aws_conn_id: the AWS connection the object was written with.
        """
        bucket, key = split_s3_uri(uri)
        return str(
            self._client(aws_conn_id).generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=self.expires_in,
            )
        )
