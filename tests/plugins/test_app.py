"""The Kling view's app: authentication, DAG access, the list and its filters, the tab, videos, live."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient

from airflow_provider_kling.plugins._live import LiveStatusCache
from airflow_provider_kling.plugins._presign import Presigner
from airflow_provider_kling.plugins.app import create_app
from airflow_provider_kling.records import submit_record

from ._support import READABLE_BY_RESTRICTED, add_record, token_for

if TYPE_CHECKING:
    from ._support import SeededTask

ENDPOINTS = (
    "/",
    "/task-instance?dag_id=kling_dag_a&run_id=unit_00000&task_id=generate",
    "/static/gallery.js",
    "/api/videos",
    "/api/task-instance?dag_id=kling_dag_a&run_id=unit_00000&task_id=generate",
    "/api/live?dag_id=kling_dag_a&run_id=unit_00000&task_id=generate",
    "/video?dag_id=kling_dag_a&run_id=unit_00000&task_id=land&index=0",
)


def ti_query(task: SeededTask, task_id: str | None = None) -> str:
    return f"dag_id={task.dag_id}&run_id={task.run_id}&task_id={task_id or task.task_id}"


def local_presigner() -> Presigner:
    """Signs for an endpoint nobody listens on: a presign that sent a request would fail."""
    return Presigner(
        lambda _conn_id: boto3.client(
            "s3",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="AKIDKLINGTEST",
            aws_secret_access_key="kling-secret-never-shown",
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )
    )


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_needs_an_authenticated_user(kling_view_db: list[SeededTask], path: str) -> None:
    anonymous = TestClient(create_app())
    assert anonymous.get(path, follow_redirects=False).status_code == 401
    forged = anonymous.get(path, headers={"Authorization": "Bearer not-a-jwt"}, follow_redirects=False)
    assert forged.status_code in (401, 403)


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404


def test_list_is_newest_first_paginated_with_totals(
    client: TestClient, kling_view_db: list[SeededTask]
) -> None:
    first = client.get("/api/videos?per_page=10").json()
    assert first["total"] == 30
    assert first["pages"] == 3
    assert [card["run_id"] for card in first["cards"]] == [task.run_id for task in kling_view_db[:10]]
    third = client.get("/api/videos?per_page=10&page=3").json()
    assert [card["run_id"] for card in third["cards"]] == [task.run_id for task in kling_view_db[20:]]
    assert first["totals"]["billed_seconds"] == 150
    assert {row["dag_id"]: row["billed_seconds"] for row in first["totals"]["per_dag"]} == {
        "kling_dag_a": 75,
        "kling_dag_b": 75,
    }
    assert sum(row["tasks"] for row in first["totals"]["per_day"]) == 30
    card = first["cards"][0]
    assert card["request"]["prompt"] == "a lighthouse at dawn #0"
    assert (card["status"], card["usage_seconds"], card["landed"]) == ("Success", 5, True)
    assert card["links"]["task_instance"] == "/dags/kling_dag_a/runs/unit_00000/tasks/generate"
    assert card["links"]["landing_task_instance"] == "/dags/kling_dag_a/runs/unit_00000/tasks/land"
    (video,) = card["videos"]
    assert video["state"] == "landed"
    assert parse_qs(urlsplit(video["src"]).query)["task_id"] == ["land"]
    assert "s3://" not in json.dumps(first)  # objects are reached through the video endpoint only


def test_filters(client: TestClient) -> None:
    only_b = client.get("/api/videos?dag_id=kling_dag_b&per_page=100").json()
    assert only_b["total"] == 15
    assert {card["dag_id"] for card in only_b["cards"]} == {"kling_dag_b"}
    assert client.get("/api/videos?status=landed&per_page=100").json()["total"] == 15
    assert client.get("/api/videos?status=in_flight").json()["total"] == 0
    assert client.get("/api/videos?status=Failure").json()["total"] == 0
    assert client.get("/api/videos?status=Success&per_page=100").json()["total"] == 30
    assert client.get("/api/videos?since=2999-01-01").json()["total"] == 0
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert client.get(f"/api/videos?since={today}&until={today}&per_page=100").json()["total"] >= 1
    assert client.get("/api/videos?since=yesterday").status_code == 400
    assert client.get("/api/videos?status=<script>").status_code == 400


def test_a_user_sees_only_the_dags_they_may_read(client: TestClient, kling_view_db: list[SeededTask]) -> None:
    client.headers["Authorization"] = f"Bearer {token_for('restricted')}"
    listed = client.get("/api/videos?per_page=100").json()
    assert listed["dags"] == [READABLE_BY_RESTRICTED]
    assert {card["dag_id"] for card in listed["cards"]} == {READABLE_BY_RESTRICTED}
    assert client.get("/api/videos?dag_id=kling_dag_b").status_code == 403
    other = next(task for task in kling_view_db if task.dag_id != READABLE_BY_RESTRICTED)
    for path in ("/task-instance", "/api/task-instance", "/api/live", "/video"):
        answer = client.get(f"{path}?{ti_query(other)}", follow_redirects=False)
        assert answer.status_code == 403, path


def test_task_instance_tab_merges_the_landing(client: TestClient, kling_view_db: list[SeededTask]) -> None:
    task = kling_view_db[0]
    answer = client.get(f"/api/task-instance?{ti_query(task)}&map_index={{MAP_INDEX}}").json()
    assert answer["is_kling_task"] is True
    (card,) = answer["cards"]
    assert (card["kling_task_id"], card["landed"]) == (task.kling_task_id, True)
    empty = client.get(f"/api/task-instance?{ti_query(task, 'not_kling')}").json()
    assert empty == {"now": empty["now"], "cards": [], "is_kling_task": False}


def test_video_redirects_to_a_short_lived_presigned_url(kling_view_db: list[SeededTask]) -> None:
    now = [time.time()]
    app_client = TestClient(create_app(presigner=local_presigner(), clock=lambda: now[0]))
    app_client.headers["Authorization"] = f"Bearer {token_for('viewer_all')}"
    landed = kling_view_db[0]
    answer = app_client.get(f"/video?{ti_query(landed, 'land')}&index=0", follow_redirects=False)
    assert answer.status_code == 307
    target = urlsplit(answer.headers["location"])
    assert target.path == f"/kling-tests/kling/{landed.dag_id}/{landed.kling_task_id}/0.mp4"
    assert int(parse_qs(target.query)["X-Amz-Expires"][0]) <= 900
    assert "kling-secret-never-shown" not in answer.headers["location"]
    not_landed = kling_view_db[1]
    answer = app_client.get(f"/video?{ti_query(not_landed)}&index=0", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"].startswith("https://cdn.example.invalid/")
    now[0] += 60 * 24 * 3600  # past the result URL's life
    assert app_client.get(f"/video?{ti_query(not_landed)}&index=0", follow_redirects=False).status_code == 410
    cards = app_client.get("/api/videos?since=2000-01-01&per_page=2").json()["cards"]
    assert [video["state"] for video in cards[1]["videos"]] == ["expired"]
    assert app_client.get(f"/video?{ti_query(landed)}&index=5", follow_redirects=False).status_code == 404


@pytest.mark.parametrize(
    "hostile_url",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "//attacker.example/x.mp4",
    ],
)
def test_video_never_redirects_to_a_result_url_that_is_not_http(
    kling_view_db: list[SeededTask], hostile_url: str
) -> None:
    from airflow.utils.session import create_session

    record = submit_record(body={"input": {"prompt": "hostile"}}, kling_task_id="task-h", kling_conn_id="k")
    record.update(status="Success", urls=[hostile_url], finished_at=time.time())
    run_id = f"hostile_{abs(hash(hostile_url))}"
    with create_session() as session:
        add_record(
            session,
            dag_id="kling_dag_hostile",
            run_id=run_id,
            task_id="generate",
            record=record,
            run_after=datetime(2001, 1, 2, tzinfo=UTC),  # outside the ranges the other tests list
            state="success",
        )
    app_client = TestClient(create_app(presigner=local_presigner()))
    app_client.headers["Authorization"] = f"Bearer {token_for('viewer_all')}"
    query = f"dag_id=kling_dag_hostile&run_id={run_id}&task_id=generate&index=0"
    answer = app_client.get(f"/video?{query}", follow_redirects=False)
    assert answer.status_code == 404, answer.headers
    assert "location" not in answer.headers
    assert "http(s)" in answer.json()["detail"]


class CountingQuery:
    """A status query that takes a while and counts its calls and the most of them in flight at once."""

    def __init__(self, status: str = "Running", seconds: float = 0.2) -> None:
        self.status, self.seconds = status, seconds
        self.calls = self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, kling_conn_id: str, kling_task_id: str) -> tuple[str, float | None]:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.seconds)
        with self.lock:
            self.in_flight -= 1
        return self.status, None


def test_live_status_is_cached_and_single_flight(kling_view_db: list[SeededTask]) -> None:
    from airflow.utils.session import create_session

    now = [time.time()]
    query = CountingQuery()
    cache = LiveStatusCache(query, clock=lambda: now[0])
    record = submit_record(
        body={"input": {"prompt": "in flight"}}, kling_task_id="task-live", kling_conn_id="kling_x"
    )
    with create_session() as session:
        add_record(
            session,
            dag_id="kling_dag_live",
            run_id="live_run",
            task_id="generate",
            record=record,
            run_after=datetime(2001, 1, 1, tzinfo=UTC),  # outside the ranges the other tests list
            state="deferred",
        )
    app_client = TestClient(create_app(live_status=cache, clock=lambda: now[0]))
    app_client.headers["Authorization"] = f"Bearer {token_for('viewer_all')}"
    url = "/api/live?dag_id=kling_dag_live&run_id=live_run&task_id=generate"
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(app_client.get(url).json())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (query.calls, query.most_in_flight) == (1, 1)
    assert [answer["live"]["status"] for answer in answers] == ["Running"] * 4
    since = answers[0]["live"]["status_since"]
    now[0] += 9.5
    app_client.get(url)
    assert query.calls == 1  # still fresh
    now[0] += 1.0
    later = app_client.get(url).json()["live"]
    assert query.calls == 2
    assert later["status_since"] == since  # still Running: the clock of the status keeps running
    finished = app_client.get(f"/api/live?{ti_query(kling_view_db[0])}").json()["live"]
    assert finished["status"] == "Success"
    assert query.calls == 2  # a finished task is never queried


def test_a_failed_live_query_says_so_without_details() -> None:
    def failing(kling_conn_id: str, kling_task_id: str) -> tuple[str, float | None]:
        raise RuntimeError("Authorization: sk-secret")

    answer = LiveStatusCache(failing).get("kling_x", "task-1", known_status="Pending", known_since=5.0)
    assert (answer.status, answer.status_since) == ("Pending", 5.0)
    assert answer.error == "status query failed (RuntimeError)"
