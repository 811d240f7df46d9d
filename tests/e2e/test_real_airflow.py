"""
The text-to-video example in a real Airflow (scheduler, DAG processor, triggerer, API server on 127.0.0.1),
checked through the REST API and in headless Chromium.

One Airflow serves every test here (the package-scoped ``airflow_stack``); the run happens once
(``text_to_video_run``). The browser checks save their screenshots to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kling.testing.simulator import result_video

from .conftest import CATALOG, TEXT_TO_VIDEO, UI_TIMEOUT_MS, RealRun, screenshot

if TYPE_CHECKING:
    from airflow_stack import AirflowStack
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

#: A key that must never appear in the UI (the connection form test stores it in a DB connection).
UI_CHECK_KEY = "sk-e2e-ui-check-not-a-real-key-4711"


def _landed_uri(run: RealRun) -> str:
    uris = run.stack.api.xcom(TEXT_TO_VIDEO, run.outcome.run_id, "land_in_s3")
    assert isinstance(uris, list)
    assert len(uris) == 1, uris
    return str(uris[0])


# --- The run, through the REST API ----------------------------------------------------------------------


def test_text_to_video_runs_green_in_real_airflow(text_to_video_run: RealRun) -> None:
    outcome = text_to_video_run.outcome

    assert outcome.state == "success", f"the run ended {outcome.state}: tasks went {outcome.states_seen}"
    assert outcome.states_seen["land_in_s3"][-1] == "success"


def test_the_sensor_waited_in_the_real_triggerer(text_to_video_run: RealRun) -> None:
    stack, run_id = text_to_video_run.stack, text_to_video_run.outcome.run_id

    assert "deferred" in text_to_video_run.outcome.states_seen["wait"]
    assert "up_for_retry" not in text_to_video_run.outcome.states_seen["wait"]
    (wait,) = [ti for ti in stack.api.task_instances(TEXT_TO_VIDEO, run_id) if ti["task_id"] == "wait"]
    assert wait["try_number"] == 1, "one try: deferred, resumed, done"
    log = stack.api.task_log(TEXT_TO_VIDEO, run_id, "wait")
    assert "Pausing task as DEFERRED" in log
    # The trigger's own lines, written by the triggerer process, are part of the task's log.
    assert re.search(r"Kling task \w+ is Running after [\d.]+ s of waiting", log), log
    assert re.search(r"Kling task \w+ is Success after [\d.]+ s of waiting", log), log
    assert "trigger completed" in log


def test_exactly_one_task_was_billed_and_its_video_landed(text_to_video_run: RealRun) -> None:
    backends = text_to_video_run.backends
    (body,) = text_to_video_run.submitted  # one submit: one billed task
    assert body["parameters"]["external_task_id"].startswith(TEXT_TO_VIDEO)
    assert "A lighthouse on a cliff at dawn" in body["input"]["prompt"]  # the templated prompt, rendered

    uri = _landed_uri(text_to_video_run)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    assert key.startswith("kling/text-to-video/")
    landed = backends.s3.get_object(Bucket=bucket, Key=key)
    assert landed["Body"].read() == result_video("16:9")
    assert landed["ContentType"] == "video/mp4"
    assert landed["Metadata"]["airflow-run-id"] == text_to_video_run.outcome.run_id


def _first_run_of(stack: AirflowStack, dag_id: str, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.api.dag_runs(dag_id)
        if runs:
            return str(runs[-1]["dag_run_id"])
        time.sleep(0.5)
    raise AssertionError(f"{dag_id} was not triggered within {timeout:g} s")


def test_the_landed_video_triggered_the_asset_scheduled_catalog(text_to_video_run: RealRun) -> None:
    stack, backends = text_to_video_run.stack, text_to_video_run.backends
    uri = _landed_uri(text_to_video_run)

    # Airflow 3.3.2's GET /assets/events answers 500 while a run it created has not started yet
    # (created_dagruns[].start_date is None): wait for the catalog's run first.
    catalog_run_id = _first_run_of(stack, CATALOG, timeout=120.0)
    catalog_run = stack.wait_for_run(CATALOG, catalog_run_id, timeout=180.0)

    assert catalog_run.state == "success"
    events = [event for event in stack.api.asset_events() if event["uri"] == uri]
    assert len(events) == 1
    assert events[0]["extra"]["size-bytes"] == len(result_video("16:9"))
    assert events[0]["extra"]["kling-task-id"]
    assert [(run["dag_id"], run["run_id"]) for run in events[0]["created_dagruns"]] == [
        (CATALOG, catalog_run_id)
    ]
    catalog_uri = stack.api.xcom(CATALOG, catalog_run_id, "catalog_new_videos")
    bucket, key = str(catalog_uri).removeprefix("s3://").split("/", 1)
    entries = json.loads(backends.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert [entry["uri"] for entry in entries] == [uri]


# --- The UI, in headless Chromium ------------------------------------------------------------------------


def _open(page: Page, stack: AirflowStack, path: str) -> None:
    page.goto(f"{stack.api_url}{path}", wait_until="networkidle", timeout=UI_TIMEOUT_MS)


def test_ui_shows_the_run_green(text_to_video_run: RealRun, page: Page) -> None:
    stack, run_id = text_to_video_run.stack, text_to_video_run.outcome.run_id

    _open(page, stack, f"/dags/{TEXT_TO_VIDEO}/runs/{run_id}")

    page.get_by_text("3 Task Instances").wait_for()
    for operator in ("KlingSubmitVideoOperator", "KlingTaskSensor", "KlingToS3Operator"):
        page.get_by_text(operator, exact=True).wait_for()
    # The run's badge and every task instance's state.
    assert page.get_by_text("Success", exact=True).count() >= 4
    assert page.get_by_text("Failed", exact=True).count() == 0
    screenshot(page, "01-dag-run-green")


def test_ui_task_log_tells_the_status_story(text_to_video_run: RealRun, page: Page) -> None:
    stack, run_id = text_to_video_run.stack, text_to_video_run.outcome.run_id

    _open(page, stack, f"/dags/{TEXT_TO_VIDEO}/runs/{run_id}/tasks/wait")

    for line in (
        r"Kling task \w+ is Pending",  # the sensor's first look, on the worker
        r"Waiting for Kling task \w+ in the triggerer",
        r"Kling task \w+ is Running after [\d.]+ s of waiting",  # the trigger, in the triggerer
        r"Kling task \w+ is Success after [\d.]+ s of waiting",
        r"Kling task \w+ succeeded in [\d.]+ s: 1 video\(s\), 5 s billed",  # the sensor, resumed on a worker
    ):
        page.get_by_text(re.compile(line)).first.wait_for()
    screenshot(page, "02-sensor-log-status-story")


def test_ui_extra_link_points_at_the_video(text_to_video_run: RealRun, page: Page) -> None:
    stack, run_id = text_to_video_run.stack, text_to_video_run.outcome.run_id
    simulator = text_to_video_run.backends.simulator
    assert simulator is not None

    _open(page, stack, f"/dags/{TEXT_TO_VIDEO}/runs/{run_id}/tasks/wait/details")

    video_link = page.get_by_role("link", name="Kling video")
    video_link.wait_for()
    href = video_link.get_attribute("href") or ""
    assert href.startswith(f"{simulator.base_url}/results/"), href
    assert href.endswith(".mp4")
    status_link = page.get_by_role("link", name="Kling task status")
    assert (status_link.get_attribute("href") or "").endswith(f"/runs/{run_id}/tasks/wait/xcom")
    screenshot(page, "03-extra-links")


def test_ui_asset_view_lists_the_landed_video(text_to_video_run: RealRun, page: Page) -> None:
    uri = _landed_uri(text_to_video_run)

    # An asset materialised through an AssetAlias is listed once the scheduler's orphanage check has
    # activated it ([scheduler] parsing_cleanup_interval, 10 s in the harness): reload until then.
    deadline = time.monotonic() + 120.0
    while True:
        _open(page, text_to_video_run.stack, "/assets")
        page.get_by_text(re.compile(r"^\d+ Assets?$")).wait_for()
        if page.get_by_text(uri, exact=True).count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(2000)

    page.get_by_text(uri, exact=True).wait_for(timeout=1000)
    page.get_by_text("1 Alias").first.wait_for()
    screenshot(page, "04-assets-landed-video")


def test_ui_connection_form_shows_the_kling_fields_with_the_key_masked(
    airflow_stack: AirflowStack, page: Page
) -> None:
    airflow_stack.api.post_connection(
        {
            "connection_id": "kling_ui_check",
            "conn_type": "kling",
            "host": "https://api.modelverse.cn",
            "password": UI_CHECK_KEY,
            "extra": json.dumps({"timeout": 20, "max_retries": 3}),
        }
    )

    # A new connection: choosing the type "Kling (ModelVerse)" shows our relabelled fields and extras.
    _open(page, airflow_stack, "/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.focus()
    page.keyboard.type("Kling")
    page.get_by_role("option", name="Kling (ModelVerse)").click()
    for label in ("Base URL", "API key"):
        dialog.get_by_text(label, exact=True).wait_for()
    key_input = dialog.locator("input[name=password]")
    key_input.fill("typed-secret")
    assert key_input.get_attribute("type") == "password"
    assert "ModelVerse API key" in (key_input.get_attribute("placeholder") or "")
    screenshot(page, "05-connection-form-kling")
    dialog.get_by_text("Extra Fields", exact=True).click()
    for label in ("Request timeout (s)", "Max retries", "Max requests in flight (triggerer)"):
        dialog.locator("label", has_text=label).wait_for()
    page.wait_for_timeout(600)  # let the accordion's animation end, for a readable screenshot
    screenshot(page, "06-connection-form-kling-extras")
    page.keyboard.press("Escape")

    # An existing connection: the key is masked and never sent to the browser.
    page.get_by_text("kling_ui_check").wait_for()
    page.get_by_role("button", name="Edit Connection").click()
    key_input = page.get_by_role("dialog").locator("input[name=password]")
    key_input.wait_for()
    assert key_input.get_attribute("type") == "password"
    assert key_input.input_value() == "***"
    assert UI_CHECK_KEY not in page.content()
    screenshot(page, "07-connection-edit-key-masked")
