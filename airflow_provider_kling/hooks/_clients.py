"""
The httpx clients of the hook: one TLS context per process, one ``AsyncClient`` per running event loop.

Creating an httpx client costs about 24 ms of CPU, almost all of it loading the CA bundle into a fresh
TLS context. The context is built once per process and shared (an ``ssl.SSLContext`` is safe to share),
which brings a client down to well under a millisecond.

The async client is shared by every hook instance on an event loop (the triggerer runs thousands of
triggers on one loop): it is created on first use, keyed by the loop, carries no API key (the key is
passed per request) and has a bounded connection pool. Beside it, each loop has an ``asyncio.Semaphore``
of the pool's size that every async request of the hook holds while it is in flight, so that a burst of
requests waits on the semaphore (O(1)) instead of in httpcore's pool queue (see :data:`ASYNC_POOL_SIZE`).
It is closed when its loop ends: an async
generator holds it, and ``loop.shutdown_asyncgens()`` (run by ``asyncio.run``, ``asyncio.Runner`` and the
triggerer) closes that generator, whose ``finally`` awaits ``client.aclose()`` on the loop itself. A loop
is never handed another loop's client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from airflow_provider_kling.hooks._settings import DEFAULT_TIMEOUT, USER_AGENT

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator

log = logging.getLogger(__name__)

#: Connections of a loop's shared async client, and requests the hook lets be in flight at once on that
#: loop (its semaphore): one number, so that no request ever queues inside httpcore's pool. httpcore 1.0.9
#: re-scans every connection for every queued request, and counts all connections (not the idle ones)
#: against ``max_keepalive_connections``, closing one after nearly every response beyond it: 500
#: unbounded triggers opened a new connection per query (20 ms CPU each, 3.4 s loop stalls), measured in
#: ``benchmarks/RESULTS.md``. At 16, a 300 ms API latency still allows ~50 queries/s: 1,500 triggers
#: polling every 30 s.
ASYNC_POOL_SIZE: Final = 16
#: Pool of the shared async client: every connection it opens may stay alive.
ASYNC_LIMITS: Final = httpx.Limits(
    max_connections=ASYNC_POOL_SIZE, max_keepalive_connections=ASYNC_POOL_SIZE, keepalive_expiry=30.0
)


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


@dataclass(slots=True)
class _LoopClient:
    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    closer: AsyncGenerator[None, None]


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


async def shared_async_client() -> httpx.AsyncClient:
    """
    Return the running loop's shared ``httpx.AsyncClient``, creating it on first use.

    Costs a dictionary lookup once the client exists.
    """
    client, _ = await shared_async_pool()
    return client


async def shared_async_pool() -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
    """
    Return the running loop's shared ``httpx.AsyncClient`` and the semaphore of its requests in flight.

    Hold the semaphore (``async with slots:``) around each request, including the reading of its body:
    it has :data:`ASYNC_POOL_SIZE` slots, as many as the pool has connections. Costs a dictionary lookup
    once the client exists.
    """
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is not None and not entry.client.is_closed:
        return entry.client, entry.slots
    with _lock:
        for other in [other for other in list(_clients) if other.is_closed()]:
            # A loop closed without shutdown_asyncgens(): its client cannot be awaited closed any more.
            _clients.pop(other, None)
        client = httpx.AsyncClient(
            verify=shared_ssl_context(),
            headers={"User-Agent": USER_AGENT},
            timeout=DEFAULT_TIMEOUT,
            limits=ASYNC_LIMITS,
            follow_redirects=False,
        )
        slots = asyncio.Semaphore(ASYNC_POOL_SIZE)
        closer = _close_with_loop(client, weakref.ref(loop))
        _clients[loop] = _LoopClient(client, slots, closer)
    # The first step runs up to the generator's yield without suspending, and registers the generator
    # with the loop (asyncgen hooks), so that shutdown_asyncgens() finalizes it.
    await closer.__anext__()
    log.debug("Created the shared Kling httpx.AsyncClient of event loop %#x", id(loop))
    return client, slots


async def aclose_shared_async_client() -> None:
    """Close the running loop's shared client now, if it has one (the next call creates a new one)."""
    loop = asyncio.get_running_loop()
    with _lock:
        entry = _clients.pop(loop, None)
    if entry is not None:
        await entry.closer.aclose()


async def _close_with_loop(
    client: httpx.AsyncClient, loop_ref: weakref.ref[asyncio.AbstractEventLoop]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        loop = loop_ref()
        if loop is not None:
            with _lock:
                entry = _clients.get(loop)
                if entry is not None and entry.client is client:
                    del _clients[loop]
        await client.aclose()
        log.debug("Closed a shared Kling httpx.AsyncClient")
