"""
Fixtures of the Kling view's browser tests: ONE real Airflow with the provider's plugin, the local simulator
and S3 server, two runs made by the tests, and Debian's Chromium.

The browser is the e2e checks' (``tests/_browser.py``: Debian's Chromium, same flags and fixtures), with its
own screenshots (``test-artifacts/ui/``). The real Airflow loads only ``dag_files/`` (two small DAGs), so it
parses fast.
Airflow 3.3 loads the plugins of providers (provider info ``plugins``) only with ``[core]
lazy_discover_providers = False``: the stack sets it, as ``docs/ui.md`` tells users to.

Unlike the e2e stack, this one authenticates: ``simple_auth_manager_all_admins`` would make every request,
an anonymous one included, an admin's (its middleware adds a token to each), and the view's own checks
could not be seen. The simple auth manager has one user, :data:`ADMIN_USER`, with a random password; the
harness's REST client and the browser carry that user's JWT.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _browser import browser, page, pytest_runtest_makereport, save_screenshot  # shared with tests/e2e
from e2e.conftest import (  # importing it also puts scripts/ (airflow_stack, backends) on sys.path
    REPO_ROOT,
    wait_until_deferred,
)

from .dag_files.kling_ui_dags import GALLERY_DAG, IN_FLIGHT_DAG

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_stack import AirflowStack
    from backends import Backends
    from playwright.sync_api import Page

#: The shared browser fixtures and report hook, registered here by being in this module's namespace.
__all__ = ["browser", "page", "pytest_runtest_makereport"]

DAG_FILES = Path(__file__).resolve().parent / "dag_files"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
#: A prompt that would run script if the view put it into the page as HTML; longer than a card's preview.
XSS_PROMPT = (
    'A cat surfing <script>window.__klingXss = "script"</script>'
    "<img src=x onerror=\"window.__klingXss = 'img'\"> at golden hour, slow motion, spray in the low sun, "
    "the camera tracking alongside the board as the wave curls over"
)
#: How long the held video of the in-flight run takes: longer than the tests.
HELD_TASK_SECONDS = 3600.0
ADMIN_USER = "kling_admin"


def _stack_env(passwords_file: Path) -> dict[str, str]:
    """Provider plugins on, fast polls, and real authentication (one admin user)."""
    return {
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        "KLING_EXAMPLE_POLL_SECONDS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
    }


def _log_in(stack: AirflowStack, password: str) -> str:
    """Return a JWT of :data:`ADMIN_USER`, and make the harness's REST client send it."""
    import httpx

    answer = httpx.post(
        f"{stack.api_url}/auth/token", json={"username": ADMIN_USER, "password": password}, timeout=30
    )
    answer.raise_for_status()
    token = str(answer.json()["access_token"])
    # The harness's client assumes all_admins and sends no token: it has no public way to add one.
    stack.api._client.headers["Authorization"] = f"Bearer {token}"
    return token


@pytest.fixture(scope="package")
def ui_backends() -> Iterator[Backends]:
    """The local simulator (in this process) and S3 server."""
    from backends import local_backends

    with local_backends(task_seconds=HELD_TASK_SECONDS) as backends:
        yield backends


@pytest.fixture(scope="package")
def ui_stack(ui_backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """ONE real Airflow (scheduler, DAG processor, triggerer, API server with the plugin) for the package."""
    from airflow_stack import AirflowStack, HarnessError, StackSettings

    password = secrets.token_urlsafe(16)
    passwords_file = tmp_path_factory.mktemp("kling-ui-auth") / "passwords.json"
    passwords_file.write_text(json.dumps({ADMIN_USER: password}))
    settings = StackSettings(
        home=tmp_path_factory.mktemp("kling-ui-home"),
        dags_folder=DAG_FILES,
        connections=ui_backends.connections(),
        variables=ui_backends.variables,
        parallelism=2,
        extra_env=_stack_env(passwords_file),
    )
    stack = AirflowStack(settings)
    try:
        stack.start(timeout=300.0)
    except HarnessError as error:
        stack.stop()
        pytest.fail(f"The real Airflow did not start: {error}")
    try:
        stack.token = _log_in(stack, password)  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop()


@dataclass
class ViewRuns:
    """The runs the browser tests look at."""

    stack: AirflowStack
    gallery_run: str
    gallery_kling_task_id: str
    in_flight_run: str
    in_flight_kling_task_id: str
    token: str
    #: What no page or answer of the view may hold: the API key and the AWS secret key.
    secrets: tuple[str, ...]


def _kling_task_id(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    record = stack.api.xcom(dag_id, run_id, "generate", key="kling_record")
    assert isinstance(record, dict), record
    return str(record["kling_task_id"])


@pytest.fixture(scope="package")
def view_runs(ui_stack: AirflowStack, ui_backends: Backends) -> ViewRuns:
    """
    A finished and landed video (its prompt an XSS attempt), then a video held ``Running`` at the vendor.

    Both videos are held by the simulator until their task is deferred; the first is then finished by
    moving the simulator's clock, the second only moved past its first fifth (``Pending``) to ``Running``.
    """
    simulator = ui_backends.simulator
    assert simulator is not None
    simulator.task_seconds = HELD_TASK_SECONDS
    gallery_run = ui_stack.trigger(GALLERY_DAG, run_id="ui_gallery", conf={"prompt": XSS_PROMPT})
    wait_until_deferred(ui_stack, GALLERY_DAG, gallery_run, "generate")  # (Airflow 3.3.2's race)
    simulator.advance_time(HELD_TASK_SECONDS)  # done: Success
    outcome = ui_stack.wait_for_run(GALLERY_DAG, gallery_run, timeout=300.0)
    assert outcome.state == "success", outcome
    in_flight_run = ui_stack.trigger(IN_FLIGHT_DAG, run_id="ui_in_flight", conf={"prompt": "a slow sunrise"})
    ui_stack.wait_for_task_state(IN_FLIGHT_DAG, in_flight_run, "generate", "deferred", timeout=300.0)
    simulator.advance_time(HELD_TASK_SECONDS / 4)  # past the first fifth: Running
    return ViewRuns(
        stack=ui_stack,
        gallery_run=gallery_run,
        gallery_kling_task_id=_kling_task_id(ui_stack, GALLERY_DAG, gallery_run),
        in_flight_run=in_flight_run,
        in_flight_kling_task_id=_kling_task_id(ui_stack, IN_FLIGHT_DAG, in_flight_run),
        token=ui_stack.token,  # type: ignore[attr-defined]
        secrets=(
            str(ui_backends.kling_connection["password"]),
            str(ui_backends.aws_connection["password"]),
        ),
    )


@pytest.fixture(scope="package")
def browser_artifacts() -> Path:
    """Where the browser's screenshots go (see ``tests/_browser.py``)."""
    return ARTIFACTS


def ui_screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under ``test-artifacts/ui/<name>.png`` and return its path."""
    return save_screenshot(page, ARTIFACTS, name)
