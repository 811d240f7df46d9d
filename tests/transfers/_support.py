"""Helpers of the transfer tests: an in-process result server (httpx MockTransport) and S3 inspection."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_kling.hooks._download import KlingResultStream
from airflow_provider_kling.hooks._limits import DownloadLimits

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

MiB = 1024 * 1024


class _Body(httpx.SyncByteStream):
    """A response body sent in 64 KiB chunks that may break (reset) or end early (truncate) at a byte."""

    def __init__(self, payload: bytes, *, reset_at: int | None = None, end_at: int | None = None) -> None:
        self.payload = payload
        self.reset_at = reset_at
        self.end_at = end_at

    def __iter__(self) -> Iterator[bytes]:
        end = len(self.payload) if self.end_at is None else self.end_at
        for start in range(0, end, 65536):
            if self.reset_at is not None and start >= self.reset_at:
                raise httpx.ReadError("Connection reset by peer")
            yield self.payload[start : min(start + 65536, end)]


@dataclass
class ResultServer:
    """
    Serves one result file over httpx's MockTransport, with Range support and scripted faults.

    ``faults`` is consumed one per request: ``"reset"`` breaks the body halfway, ``"truncate"`` ends it
    halfway while ``Content-Length`` announces the whole, ``"ignore-range"`` answers 200 to a Range request,
    ``"extra"`` sends more bytes than announced; ``None`` serves normally.
    """

    payload: bytes
    faults: list[str | None] = field(default_factory=list)
    content_length: bool = True
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fault = self.faults.pop(0) if self.faults else None
        start = 0
        status = 200
        headers: dict[str, str] = {"content-type": "video/mp4"}
        range_header = request.headers.get("range")
        if range_header and fault != "ignore-range":
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            status = 206
            headers["content-range"] = f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}"
        body = self.payload[start:]
        if self.content_length:
            headers["content-length"] = str(len(body) - (1 if fault == "extra" else 0))
        else:  # an HTTP/1.1 body without a length is chunked (its end is then proven by the last chunk)
            headers["transfer-encoding"] = "chunked"
        half = len(body) // 2
        stream = _Body(
            body,
            reset_at=half if fault == "reset" else None,
            end_at=half if fault == "truncate" else None,
        )
        return httpx.Response(status, headers=headers, stream=stream)

    def stream(self, *, max_attempts: int = 3) -> KlingResultStream:
        """The hook's result stream of this server's file, opened (its first request made)."""
        client = httpx.Client(transport=httpx.MockTransport(self.handler))
        limits = DownloadLimits(max_attempts=max_attempts, retry_delay=0)
        url = "https://results.test/task/0.mp4"
        return KlingResultStream(client, url, kling_task_id="task-1", limits=limits).open()

    @property
    def ranges(self) -> list[str | None]:
        return [request.headers.get("range") for request in self.requests]


def unfinished_uploads(s3: S3Client, bucket: str) -> list[MultipartUploadTypeDef]:
    """The bucket's multipart uploads that were neither completed nor aborted."""
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(s3: S3Client, bucket: str) -> list[str]:
    """The bucket's object keys."""
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def fail_part(s3: S3Client, part_number: int, *, code: str = "InternalError", status: int = 500) -> list[int]:
    """
    Make S3 answer an error to part ``part_number`` (every try), through botocore's ``before-call`` event.

    Returns the list of part numbers that were attempted (appended to as the test runs).
    """
    attempted: list[int] = []

    def handler(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        number = int(params["query_string"]["partNumber"])
        attempted.append(number)
        if number != part_number:
            return None
        parsed = {
            "Error": {"Code": code, "Message": f"injected failure of part {number}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        }
        return httpx.Response(status), parsed

    # botocore-stubs types handlers as returning None; a before-call handler's return is the response.
    s3.meta.events.register("before-call.s3.UploadPart", handler)  # type: ignore[arg-type]
    return attempted


def corrupt_part_checksum(s3: S3Client, part_number: int) -> list[int]:
    """
    Send a wrong checksum with part ``part_number`` (as if its bytes were damaged on the way), so that a
    verifying S3 server rejects it with ``BadDigest``. Returns the part numbers seen.
    """
    seen: list[int] = []

    def handler(params: dict[str, Any], **_: Any) -> None:
        seen.append(int(params["PartNumber"]))
        if params["PartNumber"] == part_number:
            for name in ("ChecksumCRC32", "ChecksumSHA256"):
                if name in params:
                    params[name] = "AAAAAA==" if name == "ChecksumCRC32" else "A" * 43 + "="

    s3.meta.events.register("before-parameter-build.s3.UploadPart", handler)
    return seen


class ResettingProxy:
    """
    A TCP proxy on 127.0.0.1 that resets (TCP RST) its first ``resets`` connections after forwarding
    ``after_bytes`` bytes of the response: a connection reset in the middle of a download.

    Use as a context manager; :meth:`url` rewrites a URL of the upstream to go through the proxy.
    """

    def __init__(self, upstream_url: str, *, after_bytes: int, resets: int = 1) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream_url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.upstream = (parts.hostname, parts.port)
        self.after_bytes = after_bytes
        self.resets_left = resets
        self.connections = 0
        self.reset_count = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def url(self, url: str) -> str:
        """``url`` with the upstream's host and port replaced by the proxy's."""
        host, port = self.upstream
        return url.replace(f"//{host}:{port}", f"//127.0.0.1:{self.port}", 1)

    def __enter__(self) -> ResettingProxy:
        thread = threading.Thread(target=self._accept, name="resetting-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                reset = self.resets_left > 0
                self.resets_left -= int(reset)
            thread = threading.Thread(target=self._serve, args=(client, reset), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket, reset: bool) -> None:
        upstream = socket.create_connection(self.upstream, timeout=10)
        client.settimeout(10)
        forwarded = 0
        try:
            sockets = [client, upstream]
            while not self._stopping.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if reset and forwarded + len(data) >= self.after_bytes:
                            client.sendall(data[: self.after_bytes - forwarded])
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            with self._lock:
                                self.reset_count += 1
                            return
                        forwarded += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch, bucket: str) -> Iterator[S3Client]:
    """An in-memory S3 (moto) with ``bucket`` created, and fake credentials in the environment."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield client
