"""
Fixtures of the end-to-end checks: the local simulator and S3 server, ``airflow dags test`` runs, ONE real
Airflow for the whole package, and a headless Debian Chromium driven by Playwright.

Every fixture that starts something is package-scoped and stops it when the last e2e test is done, so the
real Airflow (about 1.2 GB of RSS with ``parallelism`` 2) does not keep running beside the unit tests.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from _browser import (  # noqa: E402  (the browser, shared with tests/ui)
    UI_TIMEOUT_MS,
    browser,
    page,
    pytest_runtest_makereport,
    save_screenshot,
)
from airflow_stack import AirflowStack, HarnessError, RunOutcome, StackSettings  # noqa: E402
from backends import KLING_POOL, KLING_POOL_CLI, Backends, list_objects, local_backends  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Page

    from airflow_provider_kling.testing import KlingSimulator

#: The shared browser fixtures and report hook, registered here by being in this module's namespace.
__all__ = ["UI_TIMEOUT_MS", "browser", "page", "pytest_runtest_makereport"]

TEXT_TO_VIDEO = "example_kling_text_to_video"
CATALOG = "example_kling_video_catalog"
#: Where screenshots go (git-ignored); CI keeps the directory as an artefact.
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
#: The status query interval of the examples in these tests (the examples' default is 30 s).
POLL_SECONDS = 1.0
#: How long the simulated video of the real Airflow run takes: "forever", until the test moves the
#: simulator's clock (see ``text_to_video_run``).
HELD_TASK_SECONDS = 3600.0
#: How long a simulated video takes under ``airflow dags test`` (the batch example waits for three).
DAGS_TEST_TASK_SECONDS = 2.0
#: Test-only DAGs (not examples) that the real Airflow loads as a second DAG bundle, beside ``example_dags/``.
E2E_DAG_FILES = Path(__file__).resolve().parent / "dag_files"
#: ``[dag_processor] dag_bundle_config_list`` of the real Airflow: Airflow's default bundle (the DAGs folder,
#: ``example_dags/``) plus ``e2e-test-dags`` (:data:`E2E_DAG_FILES`).
E2E_DAG_BUNDLES = json.dumps(
    [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": "e2e-test-dags",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(E2E_DAG_FILES)},
        },
    ]
)


def _stack_settings(
    home: Path, backends: Backends, *, parallelism: int = 2, extra_env: dict[str, str] | None = None
) -> StackSettings:
    return StackSettings(
        home=home,
        connections=backends.connections(),
        variables=backends.variables,
        pools={KLING_POOL[0]: KLING_POOL[1:]},
        parallelism=parallelism,
        extra_env={"KLING_EXAMPLE_POLL_SECONDS": f"{POLL_SECONDS:g}", **(extra_env or {})},
    )


@pytest.fixture(scope="package")
def e2e_backends() -> Iterator[Backends]:
    """The local simulator (in this process) and S3 server, with the examples' inputs in the bucket."""
    with local_backends(task_seconds=DAGS_TEST_TASK_SECONDS) as backends:
        yield backends


@dataclass
class DagsTestResult:
    """One ``airflow dags test`` run: its output and the objects it added to the bucket."""

    dag_id: str
    returncode: int
    output: str
    new_objects: dict[str, int] = field(default_factory=dict)
    submitted: list[dict[str, Any]] = field(default_factory=list)


class DagsTestRunner:
    """Runs ``airflow dags test`` for the examples in one prepared ``AIRFLOW_HOME``, each DAG at most once."""

    def __init__(self, stack: AirflowStack, backends: Backends) -> None:
        self.stack = stack
        self.backends = backends
        self.results: dict[str, DagsTestResult] = {}

    def run(self, dag_id: str, *, timeout: float = 600.0) -> DagsTestResult:
        """Run (once) ``airflow dags test <dag_id>`` and return what it did."""
        if dag_id in self.results:
            return self.results[dag_id]
        simulator = self.backends.simulator
        assert simulator is not None
        simulator.task_seconds = DAGS_TEST_TASK_SECONDS
        before = dict(list_objects(self.backends.s3, self.backends.bucket))
        submitted_before = len(simulator.submitted)
        completed = self.stack.run_cli("dags", "test", dag_id, timeout=timeout, check=False)
        after = dict(list_objects(self.backends.s3, self.backends.bucket))
        result = DagsTestResult(
            dag_id=dag_id,
            returncode=completed.returncode,
            output=completed.stdout + completed.stderr,
            new_objects={uri: size for uri, size in after.items() if uri not in before},
            submitted=list(simulator.submitted[submitted_before:]),
        )
        self.results[dag_id] = result
        return result


@pytest.fixture(scope="package")
def dags_test_runner(e2e_backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> DagsTestRunner:
    """A migrated ``AIRFLOW_HOME`` (no server started) in which ``airflow dags test`` runs the examples."""
    stack = AirflowStack(_stack_settings(tmp_path_factory.mktemp("dags-test-home"), e2e_backends))
    stack.prepare()
    stack.run_cli(*KLING_POOL_CLI)  # the command the docs give users
    assert '"kling"' in stack.run_cli("pools", "get", "kling", "--output", "json").stdout
    return DagsTestRunner(stack, e2e_backends)


@pytest.fixture(scope="package")
def airflow_stack(e2e_backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """
    ONE real Airflow (scheduler, dag-processor, triggerer, API server) for every e2e test that needs it.

    It loads the examples and, as a second DAG bundle, the test-only DAGs of :data:`E2E_DAG_FILES`.
    """
    settings = _stack_settings(
        tmp_path_factory.mktemp("airflow-home"),
        e2e_backends,
        extra_env={"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": E2E_DAG_BUNDLES},
    )
    stack = AirflowStack(settings)
    try:
        stack.start(timeout=300.0)
    except HarnessError as error:
        pytest.fail(f"The real Airflow did not start: {error}")
    try:
        yield stack
    finally:
        stack.stop()


@dataclass
class RealRun:
    """The text-to-video example's run in the real Airflow."""

    stack: AirflowStack
    backends: Backends
    outcome: RunOutcome
    submitted: list[dict[str, Any]]


@pytest.fixture(scope="package")
def text_to_video_run(airflow_stack: AirflowStack, e2e_backends: Backends) -> RealRun:
    """
    Trigger the text-to-video example (its Asset consumer unpaused) and drive it to the end.

    The simulated video is held ``Pending`` until the sensor is deferred, then ``Running`` for a few polls
    of the triggerer, then finished: the run goes through the triggerer and tells the whole status story
    however slowly this machine schedules tasks.
    """
    simulator = e2e_backends.simulator
    assert simulator is not None
    airflow_stack.wait_for_dag(CATALOG)
    airflow_stack.api.set_paused(CATALOG, paused=False)
    simulator.task_seconds = HELD_TASK_SECONDS
    submitted_before = len(simulator.submitted)
    run_id = airflow_stack.trigger(TEXT_TO_VIDEO, run_id="e2e_text_to_video")
    wait_until_deferred(airflow_stack, TEXT_TO_VIDEO, run_id, "wait")
    simulator.advance_time(HELD_TASK_SECONDS / 4)  # past the first fifth: Running
    _wait_for_status_queries(simulator, count=3, timeout=120.0)
    simulator.advance_time(HELD_TASK_SECONDS)  # done: Success
    outcome = airflow_stack.wait_for_run(TEXT_TO_VIDEO, run_id, timeout=300.0)
    return RealRun(
        stack=airflow_stack,
        backends=e2e_backends,
        outcome=outcome,
        submitted=list(simulator.submitted[submitted_before:]),
    )


def wait_until_deferred(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> None:
    """
    Wait until the task's first try is deferred AND the scheduler has seen its worker's "success" event.

    Airflow 3.3.2 race: if the trigger fires (and the task is queued again) before the scheduler has
    processed the executor's "success" event of the worker that deferred, the scheduler takes the queued
    task for one changed externally and fails that try (its guard covers ``scheduled``, not ``queued``).
    A test that holds the video at the simulator finishes it only after this returns.
    """
    stack.wait_for_task_state(dag_id, run_id, task_id, "deferred", timeout=300.0)
    stack.wait_for_component_log(
        "scheduler",
        r"Received executor event with state success for task instance TaskInstanceKey\(dag_id="
        rf"'{dag_id}', task_id='{task_id}', run_id='{run_id}', try_number=1,",
        timeout=120.0,
    )


def _wait_for_status_queries(simulator: KlingSimulator, *, count: int, timeout: float) -> None:
    """Wait (bounded) until the simulator has answered ``count`` more status queries."""
    target = simulator.requests["status"] + count
    deadline = time.monotonic() + timeout
    while simulator.requests["status"] < target:
        if time.monotonic() >= deadline:
            raise AssertionError(f"the triggerer did not poll {count} times within {timeout:g} s")
        time.sleep(0.2)


@pytest.fixture(scope="package")
def browser_artifacts() -> Path:
    """Where the browser's screenshots go (see ``tests/_browser.py``)."""
    return ARTIFACTS


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under ``test-artifacts/e2e/<name>.png`` and return its path."""
    return save_screenshot(page, ARTIFACTS, name)
