"""
A run that FAILED with the provider's auth error, in the package's real Airflow: the API key shows up nowhere.

Issue 9, "Security, tested the same way": the key never appears in task logs, triggerer logs, XCom, the
trigger table, rendered template fields, exception texts or any UI page. The DAG
(``dag_files/kling_e2e_auth_failure.py``, loaded as a second DAG bundle) has three Kling tasks, each failing
twice (one retry) with a 401 from a simulator that does not accept the connection's key
(:data:`LEAK_KEY`, a distinctive value stored in two DB connections created through the REST API):

* ``submit_rejected``: the submit is refused (worker);
* ``submit_then_key_revoked``: the submit is accepted (one task paid) and the wait is deferred; the key is
  then revoked (the simulator restarted on the same port with another key): 401 in the triggerer (try 1)
  and on the worker when the retry looks up the recorded task (try 2);
* ``wait_for_made_up_task``: a sensor on a made-up task id; an injected 503 makes it defer, the trigger
  polls through 503s until the test lifts them, then gets 401 in the triggerer (try 1); 401 on the worker
  (try 2).

Then the key (whole, its random part, base64) is looked for in: every try's log and every XCom through
the REST API; every table of the SQLite metadata database (and the trigger rows while both waits were
deferred, their kwargs decrypted with the stack's Fernet key) and the raw database file; every file under
``AIRFLOW_HOME/logs`` (scheduler, triggerer, task log files); and, in headless Chromium, the text, HTML and
every response body of the run's grid and graph, each try's log page, the Rendered Templates, XCom and
details pages of each task, the DAG's code page, the Connections list and each connection's edit form.
Screenshots go to ``test-artifacts/e2e/`` (``1x-auth-failure-*.png``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pytest

from airflow_provider_kling.testing import KlingSimulator

from .conftest import UI_TIMEOUT_MS, screenshot
from .dag_files.kling_e2e_auth_failure import (
    DAG_ID,
    MADE_UP_TASK_ID,
    REJECTED_CONN_ID,
    REVOKED_CONN_ID,
    SUBMIT_THEN_KEY_REVOKED,
    TASK_IDS,
    WAIT_FOR_MADE_UP_TASK,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_stack import AirflowStack, RunOutcome
    from playwright.sync_api import Page, Response

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: The connections' password: a key the simulators reject (at once, or once revoked). Never in a file.
LEAK_KEY = "sk-e2e-authfail-LEAK-7f3c9a1e5b2d48c6a0e9f1d3"
#: What must appear nowhere: the key, its random part (a cut or re-quoted key), and its base64 form.
NEEDLES = (LEAK_KEY, LEAK_KEY.rsplit("-", 1)[1], base64.b64encode(LEAK_KEY.encode()).decode())
#: The provider's auth error, as every failed try must report it (worker or triggerer).
AUTH_ERROR = re.compile(r"Invalid API key \(HTTP 401, code invalid_api_key")
RUN_ID = "e2e_auth_failure"
TRIES = (1, 2)
#: The tables the issue names, which must exist and hold rows of this run (``trigger``: while deferred).
NAMED_TABLES = ("trigger", "xcom", "task_instance", "rendered_task_instance_fields", "dag_run")
#: How long the simulated video of ``submit_then_key_revoked`` takes: longer than the test.
HELD_TASK_SECONDS = 3600.0


def leaks_in(text: str) -> list[str]:
    """Return the needles found in ``text``."""
    return [needle for needle in NEEDLES if needle in text]


def task_log(stack: AirflowStack, task_id: str, try_number: int) -> str:
    """Return every field of every event of a try's log (the exception's ``error_detail`` included)."""
    entries = stack.api.task_log_entries(DAG_ID, RUN_ID, task_id, try_number=try_number)
    return "\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries)


@dataclass
class AuthFailureRun:
    """The failed run, and what was seen while it ran."""

    stack: AirflowStack
    outcome: RunOutcome
    #: The trigger rows while both waits were deferred: classpath and decrypted kwargs (JSON text).
    triggers_while_deferred: list[tuple[str, str]]
    #: Submit bodies the simulators accepted (each a billed task).
    submitted: list[dict[str, Any]]
    status_queries: dict[str, int] = field(default_factory=dict)


def _scheduler_saw_deferral(stack: AirflowStack, task_id: str) -> None:
    # Airflow 3.3.2 race (see conftest.text_to_video_run): a trigger that fires before the scheduler has
    # processed the deferring worker's "success" event gets that try failed "externally". Fire only after.
    stack.wait_for_component_log(
        "scheduler",
        r"Received executor event with state success for task instance TaskInstanceKey\(dag_id="
        rf"'{DAG_ID}', task_id='{task_id}', run_id='{RUN_ID}', try_number=1,",
        timeout=120.0,
    )


def _wait_for_deferral(stack: AirflowStack, task_id: str, *, timeout: float) -> None:
    """Wait until try 1 of ``task_id`` is deferred; fail at once (with its log) if it ended instead."""
    deadline = time.monotonic() + timeout
    while True:
        (instance,) = [ti for ti in stack.api.task_instances(DAG_ID, RUN_ID) if ti["task_id"] == task_id]
        if instance["state"] == "deferred":
            return
        if instance["state"] in ("failed", "success", "up_for_retry", "upstream_failed", "skipped"):
            log = task_log(stack, task_id, instance["try_number"])
            raise AssertionError(f"{task_id} went {instance['state']} instead of deferred:\n{log[-4000:]}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{task_id} was not deferred within {timeout:g} s ({instance['state']})")
        time.sleep(0.5)


def _wait_for(condition: Any, what: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.2)


def _metadata_db(stack: AirflowStack) -> sqlite3.Connection:
    path = stack.home / "airflow.db"
    assert path.exists(), f"no SQLite metadata database at {path}"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)


def _trigger_rows(stack: AirflowStack) -> list[tuple[str, str]]:
    """
    Return ``(classpath, kwargs)`` of every trigger row, the kwargs as JSON text.

    Airflow 3.3 stores the kwargs of a trigger deferred through the Execution API as plain JSON (its
    ``Trigger._decrypt_kwargs`` accepts both); Fernet-encrypted ones are decrypted with the stack's key.
    """
    from cryptography.fernet import Fernet

    fernet = Fernet(stack.env()["AIRFLOW__CORE__FERNET_KEY"].encode())
    with contextlib.closing(_metadata_db(stack)) as db:
        rows = db.execute("SELECT classpath, kwargs FROM trigger").fetchall()
    return [
        (classpath, kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode())
        for classpath, kwargs in rows
    ]


def _post_connection(stack: AirflowStack, conn_id: str, host: str) -> None:
    stack.api.post_connection(
        {
            "connection_id": conn_id,
            "conn_type": "kling",
            "host": host,
            "password": LEAK_KEY,
            # No retries inside the hook: each injected 503 is one failed query, each 401 one answer.
            "extra": json.dumps({"timeout": 10, "max_retries": 0}),
        }
    )


@pytest.fixture(scope="module")
def auth_failure_run(airflow_stack: AirflowStack) -> Iterator[AuthFailureRun]:
    """Run ``kling_e2e_auth_failure`` to its failed end, revoking the key and lifting the 503s on cue."""
    stack = airflow_stack
    with contextlib.ExitStack() as stop:
        rejecting = stop.enter_context(KlingSimulator(api_key="sim-key-not-the-e2e-authfail-key"))
        accepting = stop.enter_context(KlingSimulator(api_key=LEAK_KEY, task_seconds=HELD_TASK_SECONDS))
        stop.callback(stack.api.delete_connection, REJECTED_CONN_ID)
        _post_connection(stack, REJECTED_CONN_ID, rejecting.base_url)
        stop.callback(stack.api.delete_connection, REVOKED_CONN_ID)
        _post_connection(stack, REVOKED_CONN_ID, accepting.base_url)
        # Every status query to the rejecting API gets 503 (before the key is checked) until lifted: the
        # sensor's first query on the worker, then the trigger's in the triggerer.
        rejecting.inject_fault(
            "status", "server_error", times=100_000, status=503, message="Service unavailable (injected)"
        )

        run_id = stack.trigger(DAG_ID, run_id=RUN_ID)
        for task_id in (SUBMIT_THEN_KEY_REVOKED, WAIT_FOR_MADE_UP_TASK):
            _wait_for_deferral(stack, task_id, timeout=300.0)
            _scheduler_saw_deferral(stack, task_id)
        # Both triggers run in the triggerer: the accepting API answered one of their status queries
        # (Pending), the rejecting one a 503 (the worker's first query was one, too).
        _wait_for(
            lambda: accepting.requests["status"] >= 1, "a status query of the revocable key", timeout=60
        )
        _wait_for(lambda: rejecting.requests["status"] >= 2, "a status query of the trigger", timeout=60)
        triggers = _trigger_rows(stack)
        submitted = list(accepting.submitted) + list(rejecting.submitted)

        # Revoke the key: the same address now answers 401 to it.
        port = urlsplit(accepting.base_url).port
        assert port is not None  # the simulator's base URL always names its port
        accepting.stop()
        revoked = stop.enter_context(KlingSimulator(api_key="sim-key-after-rotation", port=port))
        rejecting.clear_faults()

        outcome = stack.wait_for_run(DAG_ID, run_id, timeout=300.0)
        yield AuthFailureRun(
            stack=stack,
            outcome=outcome,
            triggers_while_deferred=triggers,
            submitted=submitted,
            status_queries={
                "rejecting": rejecting.requests["status"],
                "revoked": revoked.requests["status"],
            },
        )


# --- The run, through the REST API --------------------------------------------------------------------


def test_every_kling_task_failed_twice_with_the_auth_error(auth_failure_run: AuthFailureRun) -> None:
    stack, outcome = auth_failure_run.stack, auth_failure_run.outcome

    assert outcome.state == "failed", outcome.states_seen
    instances = {ti["task_id"]: ti for ti in stack.api.task_instances(DAG_ID, RUN_ID)}
    assert sorted(instances) == sorted(TASK_IDS)
    for task_id, instance in instances.items():
        assert instance["state"] == "failed", (task_id, outcome.states_seen[task_id])
        assert instance["try_number"] == 2, task_id
        for try_number in TRIES:
            log = task_log(stack, task_id, try_number)
            assert AUTH_ERROR.search(log), f"{task_id} try {try_number}:\n{log[-3000:]}"
    # Try 1 of the two waits failed in the triggerer, on the trigger's 401.
    for task_id in (SUBMIT_THEN_KEY_REVOKED, WAIT_FOR_MADE_UP_TASK):
        assert "deferred" in outcome.states_seen[task_id], task_id
        log = task_log(stack, task_id, 1)
        assert "Pausing task as DEFERRED" in log
        assert re.search(r"Kling task \w+: status query refused: .*Invalid API key \(HTTP 401", log), log
    # One task was paid for (the revocable key's submit); the rejected submits created nothing.
    (body,) = auth_failure_run.submitted
    assert body["parameters"]["external_task_id"].startswith(DAG_ID)
    assert auth_failure_run.status_queries["revoked"] >= 2, "the trigger's 401 and the retry's 401"


def test_no_task_log_xcom_or_rest_answer_holds_the_key(auth_failure_run: AuthFailureRun) -> None:
    api = auth_failure_run.stack.api

    checked: dict[str, str] = {}
    for task_id in TASK_IDS:
        for try_number in TRIES:
            checked[f"log {task_id} try {try_number}"] = task_log(auth_failure_run.stack, task_id, try_number)
        for entry in api.xcom_entries(DAG_ID, RUN_ID, task_id):
            value = api.xcom(DAG_ID, RUN_ID, task_id, key=entry["key"])
            checked[f"xcom {task_id} {entry['key']}"] = json.dumps(value, default=str)
    checked["task instances"] = json.dumps(api.task_instances(DAG_ID, RUN_ID))
    checked["dag run"] = json.dumps(api.dag_run(DAG_ID, RUN_ID))
    for conn_id in (REJECTED_CONN_ID, REVOKED_CONN_ID):
        checked[f"connection {conn_id}"] = json.dumps(api._json("GET", f"/connections/{conn_id}"))

    assert {where: leaks_in(text) for where, text in checked.items() if leaks_in(text)} == {}
    assert all(AUTH_ERROR.search(text) for where, text in checked.items() if where.startswith("log "))


def test_the_trigger_rows_held_no_key_while_deferred(auth_failure_run: AuthFailureRun) -> None:
    rows = auth_failure_run.triggers_while_deferred

    assert (
        sorted(classpath for classpath, _ in rows)
        == ["airflow_provider_kling.triggers.kling.KlingTaskTrigger"] * 2
    ), rows
    assert any(MADE_UP_TASK_ID in kwargs and REJECTED_CONN_ID in kwargs for _, kwargs in rows), rows
    assert any(REVOKED_CONN_ID in kwargs for _, kwargs in rows), rows
    assert {kwargs: leaks_in(kwargs) for _, kwargs in rows if leaks_in(kwargs)} == {}


def _table_dump(db: sqlite3.Connection, table: str) -> str:
    rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
    return "\n".join(
        repr(tuple(value.decode("utf-8", "replace") if isinstance(value, bytes) else value for value in row))
        for row in rows
    )


def test_no_table_of_the_metadata_database_holds_the_key(auth_failure_run: AuthFailureRun) -> None:
    stack = auth_failure_run.stack
    with contextlib.closing(_metadata_db(stack)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dumps = {table: _table_dump(db, table) for table in tables}

    assert set(NAMED_TABLES) <= set(dumps), sorted(dumps)
    for table in ("task_instance", "rendered_task_instance_fields", "dag_run"):
        assert RUN_ID in dumps[table], f"no row of the run in {table}"
    assert "a lighthouse on a cliff at dawn, run e2e_auth_failure" in dumps["rendered_task_instance_fields"]
    assert {table: leaks_in(dump) for table, dump in dumps.items() if leaks_in(dump)} == {}
    # What is still in the file's pages (deleted rows included) and its write-ahead log, as bytes.
    raw = b"".join(path.read_bytes() for path in stack.home.glob("airflow.db*"))
    assert [needle for needle in NEEDLES if needle.encode() in raw] == []


def test_no_log_file_holds_the_key(auth_failure_run: AuthFailureRun) -> None:
    stack = auth_failure_run.stack
    files = [path for path in (stack.home / "logs").rglob("*") if path.is_file()]
    texts = {str(path.relative_to(stack.home)): path.read_text(errors="replace") for path in files}

    for component in ("scheduler", "triggerer"):
        assert stack.component_log(component), f"the {component} log is empty"
    task_logs = [name for name in texts if f"dag_id={DAG_ID}" in name]
    assert len(task_logs) >= len(TASK_IDS) * len(TRIES), task_logs
    assert any(AUTH_ERROR.search(texts[name]) for name in task_logs)
    assert {name: leaks_in(text) for name, text in texts.items() if leaks_in(text)} == {}


# --- The UI, in headless Chromium ---------------------------------------------------------------------


class WatchedPage:
    """A page whose every response is kept, so that the data the UI fetched can be read too."""

    def __init__(self, page: Page, stack: AirflowStack) -> None:
        self.page = page
        self.stack = stack
        self.responses: list[Response] = []
        page.on("response", self._keep)

    def _keep(self, response: Response) -> None:
        self.responses.append(response)

    def open(self, path: str) -> None:
        self.page.goto(f"{self.stack.api_url}{path}", wait_until="networkidle", timeout=UI_TIMEOUT_MS)

    def settle(self) -> None:
        """Wait until the page's own requests are done (a click may start more)."""
        self.page.wait_for_load_state("networkidle", timeout=UI_TIMEOUT_MS)
        self.page.wait_for_timeout(500)

    def assert_no_key(self, where: str) -> None:
        """Assert the key is in neither the page's text, its HTML, nor any response it received."""
        self.settle()
        found = {
            "text": leaks_in(self.page.inner_text("body")),
            "html": leaks_in(self.page.content()),
        }
        read = 0
        for response in self.responses:
            with contextlib.suppress(Exception):  # redirects and aborted requests have no body
                found[f"response {response.url}"] = leaks_in(response.body().decode("utf-8", "replace"))
                read += "/ui/" in response.url or "/api/v2/" in response.url
        assert read, f"{where}: no answer of the API server was read"
        assert {part: needles for part, needles in found.items() if needles} == {}, where


@pytest.fixture
def watched(auth_failure_run: AuthFailureRun, page: Page) -> WatchedPage:
    return WatchedPage(page, auth_failure_run.stack)


def _run_path(task_id: str | None = None) -> str:
    path = f"/dags/{DAG_ID}/runs/{quote(RUN_ID)}"
    return f"{path}/tasks/{task_id}" if task_id else path


def test_ui_run_grid_and_graph_show_the_failure_and_no_key(watched: WatchedPage) -> None:
    page = watched.page

    watched.open(_run_path())
    page.get_by_text("3 Task Instances").wait_for()
    for task_id in TASK_IDS:
        page.get_by_text(task_id, exact=True).first.wait_for()
    assert page.get_by_text("Failed", exact=True).count() >= 1
    screenshot(page, "10-auth-failure-run-grid")
    watched.assert_no_key("the run's grid")

    page.get_by_role("button", name=re.compile(r"^Show Graph")).click()
    graph = page.locator(".react-flow")
    for task_id in TASK_IDS:
        graph.get_by_text(task_id, exact=True).first.wait_for()
    screenshot(page, "11-auth-failure-run-graph")
    watched.assert_no_key("the run's graph")

    page.get_by_role("button", name=re.compile(r"^Show Gantt")).click()
    watched.settle()
    watched.assert_no_key("the run's Gantt chart")
    for tab in ("events", "details"):  # the run's Audit Log and Details tabs
        watched.open(f"{_run_path()}/{tab}")
        watched.assert_no_key(f"the run's {tab} tab")
    # The browser profile is shared by the package: give the other checks back the default (grid) view.
    page.evaluate("window.localStorage.removeItem('default_dag_view')")


@pytest.mark.parametrize("try_number", TRIES)
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_ui_log_page_of_each_try_shows_the_auth_error_and_no_key(
    watched: WatchedPage, task_id: str, try_number: int
) -> None:
    page = watched.page

    watched.open(f"{_run_path(task_id)}?try_number={try_number}")
    page.get_by_text(AUTH_ERROR).first.wait_for()
    screenshot(page, f"12-auth-failure-log-{task_id}-try{try_number}")
    watched.assert_no_key(f"the log of {task_id}, try {try_number}")


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_ui_rendered_templates_xcom_and_details_show_no_key(watched: WatchedPage, task_id: str) -> None:
    page = watched.page

    watched.open(f"{_run_path(task_id)}/rendered_templates")
    page.get_by_text("kling_conn_id").first.wait_for()
    if task_id != WAIT_FOR_MADE_UP_TASK:
        page.get_by_text("a lighthouse on a cliff at dawn, run e2e_auth_failure").first.wait_for()
    else:
        page.get_by_text(MADE_UP_TASK_ID).first.wait_for()
    screenshot(page, f"13-auth-failure-rendered-{task_id}")
    watched.assert_no_key(f"the rendered templates of {task_id}")

    watched.open(f"{_run_path(task_id)}/xcom")
    screenshot(page, f"14-auth-failure-xcom-{task_id}")
    watched.assert_no_key(f"the XCom page of {task_id}")

    for tab in ("task-state-store", "events", "details"):  # Storage (the ledger), Audit Log, Details
        watched.open(f"{_run_path(task_id)}/{tab}")
        page.get_by_text(task_id).first.wait_for()
        watched.assert_no_key(f"the {tab} tab of {task_id}")


def test_ui_audit_log_and_xcom_list_show_no_key(watched: WatchedPage) -> None:
    page = watched.page

    # Browse > Audit Log, its first page (every row, the connections' creation included, is in the ``log``
    # table that test_no_table_of_the_metadata_database_holds_the_key reads).
    watched.open("/events")
    page.get_by_text(DAG_ID).first.wait_for()
    screenshot(page, "18-auth-failure-audit-log")
    watched.assert_no_key("the Audit Log")
    watched.open("/xcoms")
    watched.assert_no_key("the XComs list")


def test_ui_dag_code_shows_no_key(watched: WatchedPage) -> None:
    page = watched.page

    watched.open(f"/dags/{DAG_ID}/code")
    page.get_by_text(re.compile("REJECTED_CONN_ID")).first.wait_for()
    screenshot(page, "15-auth-failure-dag-code")
    watched.assert_no_key("the DAG's code")


def test_ui_connections_list_and_edit_forms_show_no_key(watched: WatchedPage) -> None:
    page = watched.page

    watched.open("/connections")
    for conn_id in (REJECTED_CONN_ID, REVOKED_CONN_ID):
        page.get_by_text(conn_id, exact=True).wait_for()
    screenshot(page, "16-auth-failure-connections")
    watched.assert_no_key("the Connections list")

    for conn_id in (REJECTED_CONN_ID, REVOKED_CONN_ID):
        watched.open("/connections")
        row = page.get_by_role("row").filter(has=page.get_by_text(conn_id, exact=True))
        row.get_by_role("button", name="Edit Connection").click()
        dialog = page.get_by_role("dialog")
        key_input = dialog.locator("input[name=password]")
        key_input.wait_for()
        assert key_input.get_attribute("type") == "password"
        assert key_input.input_value() == "***"
        dialog.get_by_text("Extra Fields", exact=True).click()  # the extras too
        screenshot(page, f"17-auth-failure-connection-edit-{conn_id}")
        watched.assert_no_key(f"the edit form of {conn_id}")
