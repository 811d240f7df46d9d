"""
A small client of Airflow's public REST API (``/api/v2``) on 127.0.0.1, and how a DAG run ended.

With ``[core] simple_auth_manager_all_admins`` the API server authorises every request itself, so no token
is sent (see :class:`airflow_stack.AirflowStack`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from stack_processes import HarnessError

if TYPE_CHECKING:
    from collections.abc import Mapping


#: Task states worth a progress line (queued/scheduled/none are noise on a console).
REPORTED_STATES = {
    "running": "running",
    "deferred": "deferred: waiting in the triggerer, no worker slot held",
    "up_for_retry": "up for retry",
    "up_for_reschedule": "up for reschedule",
    "success": "success",
    "failed": "failed",
    "skipped": "skipped",
    "upstream_failed": "upstream failed",
}
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


@dataclass
class RunOutcome:
    """
    How a DAG run ended, as the harness observed it.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param state: the run's final state (``success`` or ``failed``).
    :param seconds: seconds from the trigger to the final state.
    :param states_seen: every state the harness saw for each task instance, keyed ``task_id`` or
        ``task_id[map_index]``, in the order first seen.
    """

    dag_id: str
    run_id: str
    state: str
    seconds: float
    states_seen: dict[str, list[str]] = field(default_factory=dict)


class AirflowApi:
    """
    A small client of Airflow's public REST API (``/api/v2``) on 127.0.0.1.

    With ``[core] simple_auth_manager_all_admins`` the API server authorises every request itself, so no
    token is sent.

    :param base_url: the API server's URL, ``http://127.0.0.1:<port>``.
    :param timeout: the timeout of one request, in seconds.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=timeout, trust_env=False)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise HarnessError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        """Return ``/api/v2/monitor/health``."""
        result: dict[str, Any] = self._json("GET", "/monitor/health")
        return result

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """Return a DAG's details, or ``None`` while the DAG processor has not parsed it yet.

        :param dag_id: the DAG.
        """
        response = self._client.get(f"/dags/{quote(dag_id, safe='')}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise HarnessError(f"GET dag {dag_id} answered {response.status_code}: {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result

    def set_paused(self, dag_id: str, *, paused: bool) -> None:
        """Pause or unpause a DAG.

        :param dag_id: the DAG.
        :param paused: the new state.
        """
        self._json("PATCH", f"/dags/{quote(dag_id, safe='')}", json={"is_paused": paused})

    def trigger(
        self,
        dag_id: str,
        *,
        run_id: str,
        logical_date: str | None,
        conf: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a manual DAG run.

        :param dag_id: the DAG.
        :param run_id: the run id to use.
        :param logical_date: ISO timestamp with a time zone, or ``None`` for a run without one.
        :param conf: the run's ``conf``.
        """
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": dict(conf or {})}
        result: dict[str, Any] = self._json("POST", f"/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        return result

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Return one DAG run.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        result: dict[str, Any] = self._json("GET", f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}")
        return result

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Return the DAG's runs (newest first, at most 100).

        :param dag_id: the DAG.
        """
        result = self._json(
            "GET", f"/dags/{quote(dag_id, safe='')}/dagRuns", params={"limit": 100, "order_by": "-run_after"}
        )
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return the task instances of a run (mapped ones included, at most 1000).

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances",
            params={"limit": 1000},
        )
        instances: list[dict[str, Any]] = result["task_instances"]
        return instances

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int = 1, map_index: int = -1
    ) -> str:
        """Return a task try's whole log as text, one line per event.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (``-1`` when not mapped).
        """
        entries = self.task_log_entries(dag_id, run_id, task_id, try_number=try_number, map_index=map_index)
        return "\n".join(_log_line(entry) for entry in entries)

    def task_log_entries(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int = 1, map_index: int = -1
    ) -> list[Any]:
        """Return a task try's whole log as the API gives it: one object per event, with every field.

        Besides ``event`` and ``level`` that :meth:`task_log` keeps, a failure's ``error_detail`` holds the
        exception's type, text and frames.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param try_number: the try.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        entries: list[Any] = result.get("content", [])
        return entries

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, *, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """Return a task's XCom value (deserialized).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param key: the XCom key.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/xcomEntries/{quote(key)}",
            params={"map_index": map_index, "deserialize": "true", "stringify": "false"},
        )
        return result.get("value")

    def xcom_entries(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """Return every XCom entry of a task instance (keys and metadata; no values).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the task.
        :param map_index: the map index (``-1`` when not mapped).
        """
        result = self._json(
            "GET",
            f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            "/xcomEntries",
            params={"map_index": map_index, "limit": 100},
        )
        entries: list[dict[str, Any]] = result["xcom_entries"]
        return entries

    def put_pool(self, name: str, *, slots: int, description: str, include_deferred: bool) -> None:
        """Create or update a pool.

        :param name: the pool.
        :param slots: its slots.
        :param description: its description.
        :param include_deferred: whether deferred tasks hold a slot.
        """
        body = {
            "name": name,
            "slots": slots,
            "description": description,
            "include_deferred": include_deferred,
        }
        response = self._client.get(f"/pools/{quote(name, safe='')}")
        if response.status_code == 404:
            self._json("POST", "/pools", json=body)
        else:
            self._json("PATCH", f"/pools/{quote(name, safe='')}", json=body)

    def asset_events(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest asset events.

        :param limit: at most this many.
        """
        result = self._json("GET", "/assets/events", params={"limit": limit, "order_by": "-timestamp"})
        events: list[dict[str, Any]] = result["asset_events"]
        return events

    def post_connection(self, connection: Mapping[str, Any]) -> None:
        """Create a connection in the metadata database (as a user would in the UI).

        :param connection: the REST body (``connection_id``, ``conn_type``, ``host``, ``password``...).
        """
        self._json("POST", "/connections", json=dict(connection))

    def delete_connection(self, connection_id: str) -> None:
        """Delete a connection from the metadata database (no error if it does not exist).

        :param connection_id: the connection.
        """
        response = self._client.delete(f"/connections/{quote(connection_id, safe='')}")
        if response.status_code >= 400 and response.status_code != 404:
            raise HarnessError(f"DELETE connection {connection_id} answered {response.status_code}")


def _log_line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    text = str(entry.get("event", ""))
    level = entry.get("level")
    return f"[{level}] {text}" if level else text
