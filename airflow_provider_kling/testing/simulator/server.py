"""The HTTP server: the API and result routes, faults acted out, the ``/_simulator/`` admin routes."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from airflow_provider_kling.constants import STATUS_PATH, SUBMIT_PATH
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError
from airflow_provider_kling.testing.simulator.faults import make_fault
from airflow_provider_kling.testing.simulator.media import _ZEROS
from airflow_provider_kling.testing.simulator.replies import (
    _error,
    _expired_reply,
    _rate_limit_reply,
    _Reply,
    _s3_error,
)
from airflow_provider_kling.testing.simulator.state import DEFAULT_FAILURE_MESSAGE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_provider_kling.testing.simulator.faults import Endpoint, Fault
    from airflow_provider_kling.testing.simulator.state import _State

log = logging.getLogger(__name__)

_MAX_BODY_BYTES: Final = 128 * 1024 * 1024
_RESULT_PATH: Final = re.compile(r"^/results/(?P<task_id>[0-9a-f]{32})/(?P<index>[1-9][0-9]{0,2})\.mp4$")
_RANGE: Final = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """
    Parse a single ``Range: bytes=...`` header.

    :return: ``(start, stop)``, ``None`` to serve the whole body (no header, a malformed or multi-range
        header: RFC 9110 allows ignoring it), or ``False`` if the range is unsatisfiable (416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match["start"], match["end"]
    if not first:
        if not last:
            return None
        suffix = int(last)
        return (max(size - suffix, 0), size) if suffix > 0 and size > 0 else False
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    return start, (min(int(last) + 1, size) if last else size)


_HTML_ERROR_PAGE: Final = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_MALFORMED_JSON: Final = b'{"output": {"task_id": "'
#: The ``Host`` headers the admin API answers: loopback names only (no DNS rebinding).
_LOOPBACK_HOST: Final = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?", re.IGNORECASE)
#: Admin requests that must carry ``Content-Type: application/json`` even with an empty body.
_BODY_METHODS: Final = frozenset({"POST", "PUT"})


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so that :meth:`close_connections` can end them."""

    daemon_threads = True
    # Connections are tracked and joined by close_connections(), with a bound.
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: _State, stopping: threading.Event) -> None:
        self.state = state
        self.stopping = stopping
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host's FQDN, a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        self.state.connection_opened()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.state.connection_closed()
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # The client went away (reset, broken pipe): not our fault.
            log.debug("Connection from %s ended: %r", client_address, error)
        else:
            log.error("Error while handling a request from %s", client_address, exc_info=error)

    def close_connections(self, timeout: float) -> None:
        """Shut down every open connection and wait (at most ``timeout`` seconds) for its thread."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(deadline - time.monotonic(), 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlingSimulator/1.0"
    # Idle keep-alive connections are closed after this many seconds without a request.
    timeout = 300
    disable_nagle_algorithm = True
    server: _Server

    # http.server API ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.state.count_response(code)
        super().send_response(code, message)

    # Routing ----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        state = self.server.state
        self.request_id = uuid.uuid4().hex
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        body = self._read_body()
        if body is None:
            return
        if path == SUBMIT_PATH:
            state.count_request("submit")
            if self._allow("POST"):
                self._api("submit", query, body)
        elif path == STATUS_PATH:
            state.count_request("status")
            if self._allow("GET"):
                self._api("status", query, body)
        elif path.startswith("/results/"):
            state.count_request("result")
            if self._allow("GET", "HEAD"):
                self._result(path)
        elif path.startswith("/_simulator/"):
            state.count_request("admin")
            self._admin(path.removeprefix("/_simulator/").rstrip("/"), query, body)
        else:
            state.count_request("other")
            self._reply(
                _error(HTTPStatus.NOT_FOUND, f"No route for {path}", type_="not_found_error", code=None)
            )

    def _allow(self, *methods: str) -> bool:
        if self.command in methods:
            return True
        self._reply(
            _Reply(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {
                    "error": {
                        "message": f"Method {self.command} not allowed",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                (("Allow", ", ".join(methods)),),
            )
        )
        return False

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply_and_close(HTTPStatus.LENGTH_REQUIRED, "Chunked request bodies are not supported")
            return None
        header = self.headers.get("Content-Length")
        if not header:
            return b""
        try:
            length = int(header)
            if length < 0:
                raise ValueError(header)
        except ValueError:
            self._reply_and_close(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
            return None
        if length > _MAX_BODY_BYTES:
            self._reply_and_close(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
            return None
        return self.rfile.read(length)

    # The API ----------------------------------------------------------------------------------

    def _api(self, endpoint: Endpoint, query: Mapping[str, list[str]], body: bytes) -> None:
        state = self.server.state
        fault = state.take_fault(endpoint)
        if fault is not None and not fault.after_create and self._fire(fault):
            return
        owner = state.authenticate(self.headers.get("Authorization"))
        if isinstance(owner, _Reply):
            self._reply(owner)
            return
        if endpoint == "submit":
            reply, created = state.submit(owner, body, self.request_id)
            if fault is not None and fault.after_create and created is not None and self._fire(fault):
                return
        else:
            reply = state.status(owner, query, self.request_id)
        self._reply(reply)

    def _fire(self, fault: Fault) -> bool:
        """Act out a fault; return whether the request is answered (``False``: carry on, after a delay)."""
        options = fault.options
        log.info("Injecting a %s fault on %s", fault.kind, fault.endpoint)
        if fault.kind == "slow":
            if self.server.stopping.wait(options["delay"]):
                self._reset_connection()
                return True
            return False
        if fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "rate_limit":
            self._reply(
                _rate_limit_reply(
                    options["message"], code=options["code"], retry_after=options["retry_after"]
                )
            )
        elif fault.kind == "server_error":
            self._reply(
                _error(options["status"], options["message"], type_="server_error", code=options["code"])
            )
        elif fault.kind == "html_error":
            status = HTTPStatus(options["status"])
            page = _HTML_ERROR_PAGE.format(status=status.value, phrase=status.phrase).encode()
            self._send(status, page, "text/html")
        elif fault.kind == "malformed_json":
            self._send(HTTPStatus.OK, _MALFORMED_JSON, "application/json")
        elif fault.kind == "expired":
            self._reply(_expired_reply())
        elif fault.kind == "endless":
            self._send_endless(options["seconds"])
        else:  # "truncate" and "gzip" are acted out by _result, which has the video.
            return False
        return True

    def _send_endless(self, seconds: float) -> None:
        """A ``200 video/mp4`` whose body never ends (no length): zeros until the client leaves."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Connection", "close")
        self.send_header("X-Request-Id", self.request_id)
        self.end_headers()
        self.close_connection = True
        ends = time.monotonic() + seconds
        sent = 0
        try:
            while time.monotonic() < ends and not self.server.stopping.is_set():
                self.wfile.write(_ZEROS)
                sent += len(_ZEROS)
        except OSError:
            pass  # the client hung up: what a client that caps the size does
        finally:
            self.server.state.count_bytes(sent)

    def _reset_connection(self) -> None:
        """Close the socket at once with a TCP reset, answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _result(self, path: str) -> None:
        state = self.server.state
        fault = state.take_fault("result")
        if fault is not None and self._fire(fault):
            return
        match = _RESULT_PATH.match(path)
        found = state.result(match["task_id"], int(match["index"])) if match else None
        if found is None:
            self._reply(_s3_error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist."))
            return
        if isinstance(found, _Reply):
            self._reply(found)
            return
        body, etag, finished = found
        headers = [
            ("Accept-Ranges", "bytes"),
            ("ETag", etag),
            ("Last-Modified", formatdate(finished, usegmt=True)),
        ]
        if_range = self.headers.get("If-Range")
        byte_range = _parse_range(self.headers.get("Range"), body.size) if if_range in (None, etag) else None
        if byte_range is False:
            headers.append(("Content-Range", f"bytes */{body.size}"))
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain", headers)
            return
        status = HTTPStatus.OK
        start, stop = 0, body.size
        if byte_range is not None:
            status = HTTPStatus.PARTIAL_CONTENT
            start, stop = byte_range
            headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{body.size}"))
        if fault is not None and fault.kind == "gzip":
            # Content-Encoding: gzip over the whole file (Range then counts the coded bytes: not served).
            coded = gzip.compress(b"".join(bytes(chunk) for chunk in body.iter_range(0, body.size)))
            self._send(HTTPStatus.OK, coded, "video/mp4", [*headers[:1], ("Content-Encoding", "gzip")])
            return
        truncate = fault is not None and fault.kind == "truncate"
        self._send_headers(status, "video/mp4", stop - start, headers)
        if self.command == "HEAD":
            return
        limit = start + (stop - start) // 2 if truncate else stop
        sent = 0
        try:
            for chunk in body.iter_range(start, limit):
                if self.server.stopping.is_set():
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            state.count_bytes(sent)
        if truncate:
            # Content-Length promised more: closing now leaves the client a short body.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    # The admin API ------------------------------------------------------------------------------

    def _admin(self, route: str, query: Mapping[str, list[str]], body: bytes) -> None:
        state = self.server.state
        refusal = self._admin_refusal(body)
        if refusal is not None:
            self._reply(refusal)
            return
        try:
            payload = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._reply(
                _error(
                    HTTPStatus.BAD_REQUEST, f"Invalid JSON: {error}", type_="invalid_request_error", code=None
                )
            )
            return
        if not isinstance(payload, dict):
            self._reply(
                _error(
                    HTTPStatus.BAD_REQUEST, "Expected a JSON object", type_="invalid_request_error", code=None
                )
            )
            return
        try:
            reply = self._admin_route(state, route, query, payload)
        except (KlingSimulatorError, TypeError) as error:
            reply = _error(HTTPStatus.BAD_REQUEST, str(error), type_="invalid_request_error", code=None)
        self._reply(reply)

    def _admin_refusal(self, body: bytes) -> _Reply | None:
        """
        Refuse an admin request a web page could have sent: a foreign ``Host`` or a non-JSON body.

        A page on any site can make a browser send a "simple" cross-site request (``text/plain``, a form)
        without asking first, and a page on a rebound DNS name reaches 127.0.0.1 with its own name in
        ``Host``. Requiring a loopback ``Host`` and ``application/json`` (which a cross-site page can only
        send after a CORS preflight, which the simulator never grants) stops both.
        """
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or _LOOPBACK_HOST.fullmatch(hosts[0].strip()) is None:
            shown = ", ".join(repr(host[:100]) for host in hosts) or "none"
            return _error(
                HTTPStatus.FORBIDDEN,
                "The simulator's admin API answers only requests addressed to a loopback host "
                f"(127.0.0.1, localhost or [::1], with an optional port); Host: {shown}",
                type_="permission_error",
                code=None,
            )
        if self.command in _BODY_METHODS or body:
            media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                return _error(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "The simulator's admin API takes application/json bodies only (send {} for no "
                    f"options); Content-Type: {self.headers.get('Content-Type', 'none')[:100]!r}",
                    type_="invalid_request_error",
                    code=None,
                )
        return None

    def _admin_route(
        self, state: _State, route: str, query: Mapping[str, list[str]], payload: dict[str, Any]
    ) -> _Reply:
        method = self.command
        if route == "faults" and method == "POST":
            fault = make_fault(**payload)
            state.add_fault(fault)
            return _Reply(HTTPStatus.CREATED, {"fault": fault.as_dict()})
        if route == "faults" and method == "GET":
            return _Reply(HTTPStatus.OK, {"faults": [fault.as_dict() for fault in state.pending_faults()]})
        if route == "faults" and method == "DELETE":
            return _Reply(HTTPStatus.OK, {"cleared": state.clear_faults()})
        if route == "fail-next-tasks" and method == "POST":
            state.fail_next(payload.get("n", 1), payload.get("message", DEFAULT_FAILURE_MESSAGE))
            return _Reply(HTTPStatus.OK, {"failures_pending": state.stats()["failures_pending"]})
        if route == "reset" and method == "POST":
            state.reset()
            return _Reply(HTTPStatus.OK, {"reset": True})
        if route == "stats" and method == "GET":
            return _Reply(HTTPStatus.OK, state.stats())
        if route == "submitted" and method == "GET":
            return _Reply(HTTPStatus.OK, {"submitted": state.submitted()})
        if route == "tasks" and method == "GET":
            external = query.get("external_task_id", [None])[0]
            return _Reply(HTTPStatus.OK, {"tasks": state.task_bodies(external)})
        if route == "config" and method == "GET":
            return _Reply(HTTPStatus.OK, state.settings.as_dict())
        if route == "config" and method == "POST":
            return _Reply(HTTPStatus.OK, state.configure(**payload).as_dict())
        if route == "advance" and method == "POST":
            return _Reply(HTTPStatus.OK, {"clock_offset_seconds": state.advance(payload.get("seconds", 0))})
        return _error(
            HTTPStatus.NOT_FOUND,
            f"No simulator route {method} /_simulator/{route}",
            type_="not_found_error",
            code=None,
        )

    # Writing ----------------------------------------------------------------------------------

    def _reply(self, reply: _Reply) -> None:
        headers = list(reply.headers)
        content_type = next((value for name, value in headers if name == "Content-Type"), None)
        headers = [(name, value) for name, value in headers if name != "Content-Type"]
        if isinstance(reply.payload, bytes):
            self._send(reply.status, reply.payload, content_type or "application/octet-stream", headers)
        else:
            data = json.dumps(reply.payload, ensure_ascii=False).encode()
            self._send(reply.status, data, content_type or "application/json", headers)

    def _reply_and_close(self, status: int, message: str) -> None:
        self.close_connection = True
        reply = _error(status, message, type_="invalid_request_error", code=None)
        self._reply(_Reply(reply.status, reply.payload, (("Connection", "close"),)))

    def _send_headers(
        self, status: int, content_type: str, length: int, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", self.request_id)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_headers(status, content_type, len(data), headers)
        if self.command != "HEAD":
            self.wfile.write(data)
            self.server.state.count_bytes(len(data))
