"""
The download of one result video: :class:`KlingResultStream`, which :meth:`KlingHook.stream_result` returns.

A result URL is served by a CDN we do not control, so every answer is treated as hostile:

* **Bounded.** The bytes of the video are capped (``max_bytes``), the whole download has a deadline
  (``timeout``: connecting, redirects, reading and resuming included) and every read a read timeout.
* **Redirects followed by hand** (at most :data:`MAX_REDIRECTS`): http(s) only, never from https to http,
  never to a link-local address (169.254.0.0/16, fe80::/10: cloud metadata services) or an unspecified,
  multicast or reserved one, and never to a loopback or private address unless the result URL itself was
  on one (the local simulator's case). The API key, sent only when the result URL is under the API's base
  URL, is never sent on a redirect.
* **Complete or nothing.** A body is complete when its byte count matches ``Content-Length``; without
  one, when chunked transfer coding ended properly, a gzip stream reached its end, or (a body delimited by
  the connection's close) its MP4 top-level boxes end exactly where the body ends. Anything else is a
  truncation, which is resumed with ``Range`` like a reset.
* **Content codings** (``gzip``, ``deflate``) are decoded here, by one decoder that lives across resumes,
  so ``Content-Length``, the byte count and ``Range`` all speak of the coded bytes the server sent, while
  the caller gets the video's own bytes. Other codings are refused.
* **Resumed, not restarted.** A broken body is requested again from the byte it broke at
  (``Range: bytes=N-``, a ``206`` with a matching ``Content-Range`` expected); a server that ignores
  ``Range`` and answers ``200`` with the same length is read again from the start, its first ``N`` bytes
  dropped. At most ``max_attempts`` requests in all.

Every failure ends in the provider's error tree: :class:`KlingResultExpiredError` (403/404/410: the URL
has expired) or :class:`KlingResultDownloadError`, whose message never holds the URL's query string (the
signature) or the API key.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
import zlib
from typing import TYPE_CHECKING, Final, Self

import httpx

from airflow_provider_kling.exceptions import KlingResultDownloadError, KlingResultExpiredError
from airflow_provider_kling.hooks._limits import DownloadLimits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

#: Redirects followed per request.
MAX_REDIRECTS: Final = 5
#: Statuses of a result URL that mean "expired" (presigned URLs answer 403 once past their expiry).
EXPIRED_STATUSES: Final = frozenset({403, 404, 410})
#: Statuses worth asking again (the CDN's transient faults).
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES: Final = 256 * 1024
#: zlib ``wbits`` per content coding: 47 reads a gzip or zlib header, -15 raw deflate.
_DECODERS: Final[Mapping[str, int]] = {"gzip": 47, "x-gzip": 47, "deflate": 47}
_CONTENT_RANGE: Final = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)")
#: Exceptions httpx/h11 may let through on a garbled answer (a 5,000-digit Content-Length is a ValueError).
_GARBLED: Final = (ValueError, OverflowError, LookupError, UnicodeError)


class _Retryable(Exception):
    """A failure a new request may cure (a reset, a truncation, a 5xx): resume if attempts remain."""


def shown_url(url: str) -> str:
    """Return ``url`` without its userinfo, query string and fragment (a signature must not be shown)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


def checked_result_url(url: object) -> httpx.URL:
    """
    Parse a result URL: an absolute http(s) URL with a host.

    :param url: ``output.urls[i]`` of a finished task.
    :raises ValueError: it is not one.
    """
    if not isinstance(url, str):
        raise ValueError(f"The result URL must be a string, got {type(url).__name__}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, *_GARBLED):
        raise ValueError("The result URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"The result URL must be an http(s) URL with a host, got scheme {parsed.scheme!r}")
    return parsed


def _host_addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a host stands for: itself if it is an IP literal, else what it resolves to."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1")]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable: the request itself will fail to connect
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return addresses


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    address = _unmapped(address)
    return address.is_loopback or address.is_private


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    address = _unmapped(address)
    return address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved


def is_internal_url(url: httpx.URL) -> bool:
    """Whether a URL's host is a loopback or private address (or resolves to one)."""
    return any(_is_internal(address) for address in _host_addresses(url.host))


def check_redirect(current: httpx.URL, target: httpx.URL, *, internal_allowed: bool) -> None:
    """
    Refuse a redirect a result download must not follow.

    :param current: the URL that answered with the redirect.
    :param target: where it points (absolute).
    :param internal_allowed: whether loopback and private addresses may be reached (the result URL itself
        was on one).
    :raises KlingResultDownloadError: the redirect is refused.
    """
    shown = shown_url(str(target))
    if target.scheme not in ("http", "https") or not target.host:
        raise KlingResultDownloadError(f"The result URL redirected to {shown}: only http(s) is followed")
    if current.scheme == "https" and target.scheme == "http":
        raise KlingResultDownloadError(f"The result URL redirected from https to http ({shown}): refused")
    addresses = _host_addresses(target.host)
    if any(_is_forbidden(address) for address in addresses):
        raise KlingResultDownloadError(
            f"The result URL redirected to {shown}, a link-local, unspecified or reserved address: refused"
        )
    if not internal_allowed and any(_is_internal(address) for address in addresses):
        raise KlingResultDownloadError(
            f"The result URL redirected to {shown}, a loopback or private address: refused"
        )


class _TopLevelBoxes:
    """
    Follows the top-level boxes of an MP4/MOV byte stream, to tell a whole file from a truncated one.

    A file is whole when the stream ends exactly where its last box ends, holds a ``moov`` box and media
    data (``mdat`` or fragments), and no box claims "to the end of the file" (size 0).
    """

    def __init__(self) -> None:
        self.offset = 0
        self.next_box = 0
        self.pending = b""
        self.types: set[bytes] = set()
        self.broken = False

    def feed(self, data: bytes) -> None:
        end = self.offset + len(data)
        position = self.next_box + len(self.pending) - self.offset
        while not self.broken and 0 <= position < len(data):
            self.pending += data[position : position + 16 - len(self.pending)]
            if len(self.pending) < 8:
                break
            size = int.from_bytes(self.pending[:4], "big")
            header = 8
            if size == 1:
                if len(self.pending) < 16:
                    break
                size, header = int.from_bytes(self.pending[8:16], "big"), 16
            if size < header:  # 0 ("to the end of the file") cannot be checked; smaller is corrupt
                self.broken = True
                break
            self.types.add(self.pending[4:8])
            self.next_box += size
            self.pending = b""
            position = self.next_box - self.offset
        self.offset = end

    @property
    def whole(self) -> bool:
        has_media = b"mdat" in self.types or b"moof" in self.types
        return (
            not self.broken
            and not self.pending
            and self.offset == self.next_box
            and b"moov" in self.types
            and has_media
        )


class KlingResultStream:
    """
    The bytes of one result video, downloaded within bounds and resumed where it breaks.

    Iterate over it (once) for the video's bytes; :attr:`total` is its size when the server declared it.
    Use it as a context manager (:meth:`KlingHook.stream_result` returns it open), or call :meth:`close`.

    :param client: the sync httpx client to send with (redirects are followed here, not by it).
    :param url: the result URL.
    :param kling_task_id: the task the URL belongs to, for messages.
    :param headers: headers of the first request only (the API key, when the URL is under the API).
    :param limits: the download's bounds.
    :param sleep: how to wait before a resume (injectable for tests).
    :param monotonic: the clock of the deadline (injectable for tests).
    """

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        kling_task_id: str,
        headers: Mapping[str, str] | None = None,
        limits: DownloadLimits | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._url = checked_result_url(url)
        self._first_headers = dict(headers or {})
        self.limits = limits or DownloadLimits()
        self.kling_task_id = kling_task_id
        self._sleep = sleep
        self._monotonic = monotonic
        self._deadline = monotonic() + self.limits.timeout
        self._internal_allowed = is_internal_url(self._url)
        self._response: httpx.Response | None = None
        self._encoding = "identity"
        self._decoder: zlib._Decompress | None = None
        self._raw_total: int | None = None
        self._raw_received = 0
        self._etag: str | None = None
        self._boxes = _TopLevelBoxes()
        self._skip = 0
        self._started = False
        self._iterated = False
        #: The video's size in bytes when the server declared it (no content coding), else ``None``.
        self.total: int | None = None
        #: The video bytes yielded so far.
        self.received = 0
        #: Requests made for the body so far (the first one and the resumes).
        self.attempts = 0

    @property
    def url(self) -> str:
        """The result URL, without its query string (the signature)."""
        return shown_url(str(self._url))

    # -- lifecycle ------------------------------------------------------------------------------------------

    def open(self) -> Self:
        """Send the first request (retrying transient failures within the bounds); return ``self``."""
        if self._response is None and self.attempts == 0:
            self._response = self._open_with_retries(offset=0, failure=None)
        return self

    def close(self) -> None:
        """Close the open response, if any."""
        if self._response is not None:
            self._response.close()
            self._response = None

    def __enter__(self) -> Self:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        """Yield the video's bytes once; raise if the body cannot be had whole within the bounds."""
        if self._iterated:
            raise RuntimeError("A KlingResultStream can be read only once")
        self._iterated = True
        self.open()
        try:
            while True:
                try:
                    yield from self._read_body()
                    return
                except _Retryable as failure:
                    self.close()
                    self._response = self._open_with_retries(offset=self._raw_received, failure=str(failure))
        finally:
            self.close()

    # -- requests -------------------------------------------------------------------------------------------

    def _time_left(self, doing: str) -> float:
        left = self._deadline - self._monotonic()
        if left <= 0:
            raise KlingResultDownloadError(
                f"The result download of Kling task {self.kling_task_id} from {self.url} did not finish "
                f"within its timeout of {self.limits.timeout:g} s ({doing}; {self.received} bytes received)"
            )
        return left

    def _open_with_retries(self, *, offset: int, failure: str | None) -> httpx.Response:
        while True:
            if failure is not None:
                if self.attempts >= self.limits.max_attempts:
                    raise KlingResultDownloadError(
                        f"The result download of Kling task {self.kling_task_id} from {self.url} broke off "
                        f"(truncated or reset) and failed after {self.attempts} attempts, {self.received} "
                        f"bytes received; last: {failure}"
                    )
                delay = self.limits.retry_delay * 2 ** max(self.attempts - 1, 0)
                if delay >= self._time_left(f"before resuming after: {failure}"):
                    raise KlingResultDownloadError(
                        f"The result download of Kling task {self.kling_task_id} from {self.url} broke off "
                        f"({failure}) and no resume fits in what is left of its timeout"
                    )
                self._sleep(delay)
            self.attempts += 1
            try:
                response = self._request(offset)
                self._check_answer(response, offset)
                return response
            except _Retryable as error:
                failure = str(error)

    def _request(self, offset: int) -> httpx.Response:
        """Send one GET (following redirects by hand) and return the final, open response."""
        url = self._url
        headers = {**self._first_headers, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        for _ in range(MAX_REDIRECTS + 1):
            left = self._time_left("connecting")
            timeout = httpx.Timeout(min(self.limits.read_timeout, left))
            try:
                request = self._client.build_request("GET", url, headers=headers, timeout=timeout)
                response = self._client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as error:
                raise _Retryable(f"{type(error).__name__}: {error or 'no details'}") from None
            except _GARBLED as error:
                raise _Retryable(f"a garbled answer ({type(error).__name__})") from None
            if response.status_code not in _REDIRECT_STATUSES or "location" not in response.headers:
                return response
            location = response.headers["location"]
            response.close()
            try:
                target = url.join(location)
            except (httpx.InvalidURL, *_GARBLED):
                raise KlingResultDownloadError(
                    f"The result URL {self.url} redirected to an invalid location"
                ) from None
            check_redirect(url, target, internal_allowed=self._internal_allowed)
            url = target
            headers = {key: value for key, value in headers.items() if key.lower() != "authorization"}
        raise KlingResultDownloadError(
            f"The result URL {self.url} redirected more than {MAX_REDIRECTS} times"
        )

    def _check_answer(self, response: httpx.Response, offset: int) -> None:
        """Accept the answer to a request at ``offset``, or close it and raise."""
        try:
            self._check_status(response)
            self._check_headers(response, offset)
        except BaseException:
            response.close()
            raise

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in EXPIRED_STATUSES:
            raise KlingResultExpiredError(self.kling_task_id, status)
        if status in _RETRYABLE_STATUSES:
            raise _Retryable(f"the result URL answered HTTP {status}")
        if status not in (200, 206):
            raise KlingResultDownloadError(
                f"The result URL {self.url} of Kling task {self.kling_task_id} answered HTTP {status}"
            )

    def _check_headers(self, response: httpx.Response, offset: int) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding != "identity" and encoding not in _DECODERS:
            raise KlingResultDownloadError(
                f"The result URL {self.url} sent the video with Content-Encoding {encoding[:40]!r}, which "
                "cannot be decoded here"
            )
        length = _content_length(response)
        if not self._started:
            self._started = True
            self._encoding = encoding
            if encoding != "identity":
                self._decoder = zlib.decompressobj(_DECODERS[encoding])
            self._etag = response.headers.get("etag")
            self._raw_total = length if response.status_code == 200 else None
            if length is not None and encoding == "identity":
                self.total = length
                if length > self.limits.max_bytes:
                    raise self._too_large(f"it declares {length} bytes")
            return
        if encoding != self._encoding:
            raise KlingResultDownloadError(
                f"The result URL {self.url} changed its Content-Encoding between attempts"
            )
        etag = response.headers.get("etag")
        if self._etag and etag and etag != self._etag:
            raise KlingResultDownloadError(f"The result at {self.url} changed between attempts (ETag)")
        if response.status_code == 200:
            # The server ignored the Range header: read the body again and drop what we already have.
            if self._raw_total is not None and length != self._raw_total:
                raise KlingResultDownloadError(f"The result at {self.url} changed size between attempts")
            self._skip = offset
            return
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        complete = None if match is None or match.group(3) == "*" else int(match.group(3))
        if (
            match is None
            or int(match.group(1)) != offset
            or (self._raw_total is not None and complete != self._raw_total)
            or (complete is not None and int(match.group(2)) != complete - 1)
        ):
            raise KlingResultDownloadError(
                f"The resumed download of {self.url} answered Content-Range "
                f"{response.headers.get('content-range', '')[:80]!r}, expected bytes {offset}-"
            )
        if self._raw_total is None and complete is not None:
            self._raw_total = complete
        self._skip = 0

    # -- reading --------------------------------------------------------------------------------------------

    def _read_body(self) -> Iterator[bytes]:
        response = self._response
        assert response is not None
        chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
        try:
            for raw in response.iter_raw():
                self._time_left("reading")
                if self._skip:
                    dropped = min(self._skip, len(raw))
                    self._skip -= dropped
                    raw = raw[dropped:]
                    if not raw:
                        continue
                self._raw_received += len(raw)
                if self._raw_total is not None and self._raw_received > self._raw_total:
                    raise KlingResultDownloadError(
                        f"The result URL {self.url} sent more than its Content-Length of "
                        f"{self._raw_total} bytes"
                    )
                data = self._decode(raw)
                if data:
                    yield data
        except (httpx.TransportError, httpx.DecodingError) as error:
            raise _Retryable(
                f"{type(error).__name__}: {error or 'no details'} after {self._raw_received} bytes"
            ) from None
        except _GARBLED as error:
            raise _Retryable(
                f"a garbled body ({type(error).__name__}) after {self._raw_received} bytes"
            ) from None
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                yield self._counted(tail)
        self._check_complete(chunked=chunked)

    def _decode(self, raw: bytes) -> bytes:
        if self._decoder is None:
            return self._counted(raw)
        if self._decoder.eof:
            raise KlingResultDownloadError(
                f"The result URL {self.url} sent bytes after the end of its gzip stream"
            )
        try:
            # Bounded output per call: a tiny "zip bomb" cannot expand past the cap in one go.
            data = self._decoder.decompress(raw, self.limits.max_bytes - self.received + 1)
        except zlib.error as error:
            raise KlingResultDownloadError(
                f"The result URL {self.url} sent a corrupt {self._encoding} body: {error}"
            ) from None
        if self._decoder.unconsumed_tail:
            raise self._too_large("its decoded bytes exceed the cap")
        return self._counted(data)

    def _counted(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.received > self.limits.max_bytes:
            raise self._too_large(f"more than {self.limits.max_bytes} bytes were sent")
        if self._decoder is None and self._raw_total is None:
            self._boxes.feed(data)
        return data

    def _check_complete(self, *, chunked: bool) -> None:
        if self._raw_total is not None:
            if self._raw_received < self._raw_total:
                raise _Retryable(
                    f"the body ended after {self._raw_received} of {self._raw_total} bytes (truncated)"
                )
        elif self._decoder is not None:
            if not self._decoder.eof:
                raise _Retryable(f"the {self._encoding} stream ended early (truncated)")
        elif not chunked and not self._boxes.whole:
            raise _Retryable(
                "the body, sent without a Content-Length, ended where the MP4 file does not (truncated)"
            )
        if self._decoder is not None and not self._decoder.eof:
            raise KlingResultDownloadError(
                f"The {self._encoding} body of {self.url} ended before its stream did: it is corrupt"
            )

    def _too_large(self, detail: str) -> KlingResultDownloadError:
        return KlingResultDownloadError(
            f"The result of Kling task {self.kling_task_id} at {self.url} is larger than the "
            f"{self.limits.max_bytes}-byte cap ({detail}): refused (raise max_bytes if it is genuine)"
        )


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19:
        raise KlingResultDownloadError(f"The result URL answered an invalid Content-Length {text[:40]!r}")
    return int(text)
