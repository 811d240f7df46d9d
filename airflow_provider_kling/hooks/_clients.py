"""
The HTTP clients of the hook: one TLS context per process, one aiohttp session per running event loop.

Sync requests (and result downloads) go through ``httpx.Client``, one per hook instance. Creating an
httpx client costs about 24 ms of CPU, almost all of it loading the CA bundle into a fresh TLS context;
the context is built once per process and shared (an ``ssl.SSLContext`` is safe to share).

Async requests (the triggerer's status queries) go through one ``aiohttp.ClientSession``
per event loop, shared by every hook on it: :class:`AiohttpSender`, a thin shell that sends one request
and reads its answer (at most :data:`~airflow_provider_kling.hooks._errors.MAX_ANSWER_BYTES`); the deadlines,
error translation, retries and key redaction are the hook's, the same as on the sync path. A status
query of a trigger costs 0.46 ms of CPU all included this way against 1.84 ms over ``httpx.AsyncClient``
(10,000 triggers, ``benchmarks/RESULTS.md``), and aiohttp's connector keeps any number of idle
connections in O(1) per request, where httpcore 1.0.9 re-scans every connection for every queued request
and closes connections beyond ``max_keepalive_connections``.

Beside the session, each loop has one ``asyncio.Semaphore`` per connection id: the bound on that
connection's requests in flight on the loop (the connection's ``max_in_flight`` extra), held around each
request and its body, so that a triggerer never opens more sockets than the sum of those bounds, and a
burst waits on the semaphore in O(1). The session carries no API key (the key is passed per request),
keeps no cookies, follows no redirect, and is closed when its loop ends: an async generator holds it,
and ``loop.shutdown_asyncgens()`` (run by ``asyncio.run``, ``asyncio.Runner`` and the triggerer) closes
that generator, whose ``finally`` awaits ``session.close()`` on the loop itself. A loop is never handed
another loop's session.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import urllib.request
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import httpx

from airflow_provider_kling.constants import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT
from airflow_provider_kling.hooks._errors import Answer, AnswerReader, SendError
from airflow_provider_kling.hooks._settings import USER_AGENT

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator, Mapping

    import aiohttp

log = logging.getLogger(__name__)

#: Seconds an idle connection of the shared async session stays open.
KEEPALIVE_SECONDS: Final = 30.0
#: Bytes read from a socket at a time (an API answer is a few hundred bytes).
_READ_CHUNK: Final = 64 * 1024


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """Return the process's TLS context for every request (built once; honours ``SSL_CERT_FILE``)."""
    return httpx.create_ssl_context()


def new_sync_client() -> httpx.Client:
    """Return a new sync client: no API key baked in, redirects not followed, the shared TLS context."""
    return httpx.Client(
        verify=shared_ssl_context(),
        headers={"User-Agent": USER_AGENT},
        timeout=DEFAULT_TIMEOUT,
        follow_redirects=False,
    )


class AsyncSender(Protocol):
    """What the hook's async path sends with: one request in, one whole :class:`Answer` out."""

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        seconds: float,
        what: str,
    ) -> Answer:
        """
        Send one request and read its whole answer.

        :raises SendError: the request got no (complete) HTTP answer; says whether it may have been sent.
        :raises KlingServerError: the body outgrew the cap.
        """
        ...

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` has run."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


class AiohttpSender:
    """
    The async shell over one ``aiohttp.ClientSession``: no key, no cookies, no redirects, shared TLS.

    Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``...) as httpx takes them, resolved
    once per host; ``.netrc`` is not read (aiohttp's ``trust_env`` would read it on every request).
    """

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=shared_ssl_context(), limit=0, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            trust_env=False,
        )
        #: Errors that prove nothing reached the server.
        self._not_sent: tuple[type[BaseException], ...] = (
            aiohttp.ClientConnectorError,
            aiohttp.ConnectionTimeoutError,
            aiohttp.InvalidURL,
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        seconds: float,
        what: str,
    ) -> Answer:
        """Send one request and read its whole answer (see :class:`AsyncSender`)."""
        aiohttp = self._aiohttp
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                params=params,
                allow_redirects=False,
                proxy=_proxy_for(url),
                # The connect phase alone, so that a refused or slow connect is told apart (nothing sent);
                # the whole request and body are bounded by the hook (asyncio.timeout).
                timeout=self._connect_timeout(seconds),
            ) as response:
                reader = AnswerReader(response.status, what=what)
                async for chunk in response.content.iter_chunked(_READ_CHUNK):
                    reader.add(chunk)
                return reader.answer(response.headers)
        except aiohttp.ClientError as error:
            raise SendError(error, sent=not isinstance(error, self._not_sent)) from error

    def _connect_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        seconds = round(seconds, 1) or 0.1
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 1024:
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = self._aiohttp.ClientTimeout(total=None, connect=seconds)
        return timeout

    @property
    def is_closed(self) -> bool:
        """Whether the session is closed."""
        return self.session.closed

    async def aclose(self) -> None:
        """Close the session and its connections."""
        await self.session.close()


@functools.lru_cache(maxsize=64)
def _proxy_for_origin(scheme: str, host: str) -> str | None:
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


def _proxy_for(url: str) -> str | None:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return _proxy_for_origin(scheme, host)


def new_async_sender() -> AsyncSender:
    """Return a new async sender (the tests replace this to send through ``respx``)."""
    return AiohttpSender()


@dataclass(slots=True)
class _LoopClient:
    sender: AsyncSender
    closer: AsyncGenerator[None, None]
    #: One bound per connection id: (its size, its semaphore).
    slots: dict[str, tuple[int, asyncio.Semaphore]] = field(default_factory=dict)
    closed: bool = False


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


async def shared_async_pool(
    conn_id: str = "", max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> tuple[AsyncSender, asyncio.Semaphore]:
    """
    Return the running loop's shared async sender and the semaphore of a connection's requests in flight.

    Hold the semaphore (``async with slots:``) around each request, including the reading of its body.
    Costs two dictionary lookups once the sender exists.

    :param conn_id: the connection whose bound this is (every hook of it on the loop shares it).
    :param max_in_flight: the bound; a connection whose bound changed gets a new semaphore.
    """
    entry = await _loop_client()
    bound = entry.slots.get(conn_id)
    if bound is None or bound[0] != max_in_flight:
        bound = entry.slots[conn_id] = (max_in_flight, asyncio.Semaphore(max_in_flight))
    return entry.sender, bound[1]


async def _loop_client() -> _LoopClient:
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is not None and not entry.closed and not entry.sender.is_closed:
        return entry
    with _lock:
        for other in [other for other in list(_clients) if other.is_closed()]:
            # A loop closed without shutdown_asyncgens(): its session cannot be awaited closed any more.
            _clients.pop(other, None)
        sender = new_async_sender()
        entry = _LoopClient(sender, _close_with_loop(sender, weakref.ref(loop)))
        _clients[loop] = entry
    # The first step runs up to the generator's yield without suspending, and registers the generator
    # with the loop (asyncgen hooks), so that shutdown_asyncgens() finalizes it.
    await entry.closer.__anext__()
    log.debug("Created the shared Kling async session of event loop %#x", id(loop))
    return entry


async def _close_with_loop(
    sender: AsyncSender, loop_ref: weakref.ref[asyncio.AbstractEventLoop]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        loop = loop_ref()
        if loop is not None:
            with _lock:
                entry = _clients.get(loop)
                if entry is not None and entry.sender is sender:
                    entry.closed = True
                    del _clients[loop]
        await sender.aclose()
        log.debug("Closed a shared Kling async session")
