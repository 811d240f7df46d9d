"""
Drive a :class:`~airflow_provider_kling.testing.KlingSimulator` that runs in another process.

The simulator's test-only admin API lives under ``/_simulator/`` and needs no key, but answers only
requests addressed to a loopback host (``127.0.0.1``, ``localhost``, ``[::1]``) whose POST bodies are
``application/json``, which this client sends. It wraps the API with the same names as the in-process
Python API::

    with KlingSimulatorClient("http://127.0.0.1:8089") as admin:
        admin.reset()
        admin.inject_fault("status", "server_error", times=2, status=503)
        ...
        assert len(admin.submitted()) == 1

It uses only the standard library (``urllib.request``, never a proxy): no module of the provider but the
hook imports ``httpx``. An answer other than 2xx raises
:class:`~airflow_provider_kling.testing.KlingSimulatorError` with the status and the simulator's error
message; a connection failure or a timeout raises :class:`OSError` (``URLError``, ``TimeoutError``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow_provider_kling.testing.simulator import KlingSimulatorError

if TYPE_CHECKING:
    from airflow_provider_kling.testing.simulator import Endpoint, FaultKind

#: How much of a refusal's body goes into the error message, in bytes.
_ERROR_BODY_BYTES = 2000


def _error_message(body: bytes) -> str:
    """Return the ``error.message`` of a JSON error body, or the start of the body as text."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
    return str(message)


class KlingSimulatorClient:
    """
    A small HTTP client for a simulator's ``/_simulator/`` admin API.

    :param base_url: the simulator's base URL, e.g. ``http://127.0.0.1:8089``.
    :param timeout: the timeout of each request, in seconds.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # No proxy: the admin API answers only requests addressed to a loopback host.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"KlingSimulatorClient({self.base_url!r})"

    def __enter__(self) -> KlingSimulatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the client (each request uses its own connection: nothing stays open)."""

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
    ) -> Any:
        # The admin API takes POST and PUT bodies as application/json only, even empty ones.
        if payload is None and method in ("POST", "PUT"):
            payload = {}
        url = f"{self.base_url}/_simulator{path}"
        if params:
            url = f"{url}?{urlencode(params)}"
        request = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
        if payload is not None:
            request.data = json.dumps(payload).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as error:
            with error:
                message = _error_message(error.read())
            raise KlingSimulatorError(
                f"{method} /_simulator{path} was refused with {error.code}: {message}"
            ) from error
        return json.loads(body)

    def inject_fault(
        self,
        endpoint: Endpoint,
        kind: FaultKind,
        *,
        times: int = 1,
        after_create: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """
        Inject a fault (see :meth:`KlingSimulator.inject_fault`); return it with its defaults filled in.

        :param endpoint: ``submit``, ``status`` or ``result``.
        :param kind: the fault kind.
        :param times: how many requests it applies to.
        :param after_create: submit only: create the task, then fail.
        :param options: the kind's options.
        :raises KlingSimulatorError: (a 400) if the simulator refuses the fault.
        """
        payload = {
            "endpoint": endpoint,
            "kind": kind,
            "times": times,
            "after_create": after_create,
            **options,
        }
        fault: dict[str, Any] = self._call("POST", "/faults", payload)["fault"]
        return fault

    def pending_faults(self) -> list[dict[str, Any]]:
        """Return the faults that have not fired yet."""
        faults: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return faults

    def clear_faults(self) -> int:
        """Drop every pending fault; return how many there were."""
        cleared: int = self._call("DELETE", "/faults")["cleared"]
        return cleared

    def fail_next_tasks(self, n: int = 1, message: str | None = None) -> None:
        """
        Make the next ``n`` tasks end in ``Failure``.

        :param n: how many tasks.
        :param message: their ``error_message`` (the simulator's default if ``None``).
        """
        payload: dict[str, Any] = {"n": n}
        if message is not None:
            payload["message"] = message
        self._call("POST", "/fail-next-tasks", payload)

    def reset(self) -> None:
        """Forget every task, fault, counter and setting change."""
        self._call("POST", "/reset")

    def stats(self) -> dict[str, Any]:
        """Return the simulator's counters."""
        stats: dict[str, Any] = self._call("GET", "/stats")
        return stats

    def submitted(self) -> list[dict[str, Any]]:
        """Return the accepted submit bodies, in order (one per billed task)."""
        bodies: list[dict[str, Any]] = self._call("GET", "/submitted")["submitted"]
        return bodies

    def tasks(self, *, external_task_id: str | None = None) -> list[dict[str, Any]]:
        """
        Return tasks as status bodies: all, or those created with an ``external_task_id``.

        :param external_task_id: the caller's id to look for.
        """
        params: dict[str, str] = {} if external_task_id is None else {"external_task_id": external_task_id}
        tasks: list[dict[str, Any]] = self._call("GET", "/tasks", params=params)["tasks"]
        return tasks

    def configure(self, **settings: Any) -> dict[str, Any]:
        """
        Change settings for tasks created afterwards.

        :param settings: ``task_seconds``, ``results_per_task``, ``result_ttl_seconds``,
            ``result_size_bytes`` or ``max_active_tasks`` (``None``: no limit; see
            :attr:`KlingSimulator.max_active_tasks`).
        :return: every setting after the change.
        """
        result: dict[str, Any] = self._call("POST", "/config", settings)
        return result

    def advance_time(self, seconds: float) -> None:
        """
        Move the simulator's clock forward.

        :param seconds: how far, in seconds.
        """
        self._call("POST", "/advance", {"seconds": seconds})
