"""
A hostile HTTP server for tests: it answers each request with raw bytes a test scripts, as a broken API or
CDN would (a body that trickles or never ends, a garbled header, a connection closed mid-body).

Binds 127.0.0.1 only; every connection thread is a daemon bounded by ``max_seconds``; ``close()`` (or the
context manager) stops the listener and waits for the threads.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    Reply = Callable[["Exchange"], object]  # what a reply returns is ignored


@dataclass
class Exchange:
    """One request as received, and the socket to answer it on."""

    method: str
    target: str
    headers: dict[str, str]
    sock: socket.socket
    stop: threading.Event
    deadline: float

    def send(self, data: bytes) -> bool:
        """Send bytes; ``False`` once the client is gone or the server stops."""
        if self.stop.is_set() or time.monotonic() > self.deadline:
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def trickle(self, data: bytes, *, every: float) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart."""
        for byte in data:
            if not self.send(bytes([byte])) or self.stop.wait(every):
                return

    def endless(self, head: bytes, *, chunk: bytes = b"\0" * 65536) -> None:
        """Send ``head`` then chunks forever (until the client leaves or the server stops)."""
        if not self.send(head):
            return
        while self.send(chunk):
            pass


def response_head(status: int, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    """The status line and headers of a response, raw."""
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HostileServer:
    """
    Answers the n-th request with ``replies[n]`` (the last one repeats); records every request.

    :param replies: what to do with each request.
    :param max_seconds: how long any one connection may be served.
    """

    replies: list[Reply]
    max_seconds: float = 30.0
    requests: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def url(self, path: str = "/video.mp4") -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, end every connection and wait for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), name="hostile-conn", daemon=True)
            thread.start()
            with self._lock:
                self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        try:
            while not self._stop.is_set():
                exchange = self._read_request(sock)
                if exchange is None:
                    return
                with self._lock:
                    self.requests.append(exchange)
                    reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                reply(exchange)
                if exchange.headers.get("x-keep", "") != "1":
                    return  # one request per connection: the reply decides how the body ends
        except OSError:
            return
        finally:
            sock.close()

    def _read_request(self, sock: socket.socket) -> Exchange | None:
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            if len(data) > 1 << 20:
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Exchange(method, target, headers, sock, self._stop, time.monotonic() + self.max_seconds)
