"""
The Kling view in a real Airflow, in Debian's Chromium: nav entry, gallery, playback, filters, the task
instance tab, a task in flight, authentication on every endpoint, and a prompt that tries XSS.

The runs (``conftest.view_runs``): ``kling_ui_gallery`` made one video from :data:`XSS_PROMPT` and landed it
in the local S3 server; ``kling_ui_in_flight`` has a video the simulator holds ``Running``. Screenshots of
each page go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest

from .conftest import XSS_PROMPT, ui_screenshot
from .dag_files.kling_ui_dags import GALLERY_DAG, IN_FLIGHT_DAG

if TYPE_CHECKING:
    from playwright.sync_api import Frame, Page

    from .conftest import ViewRuns

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: How long a page may take to show what a check waits for.
PAGE_TIMEOUT_MS = 45_000
RUNNING_FOR = re.compile(r"^Running for \d+ (s|min)")


def gallery(page: Page, runs: ViewRuns, **filters: str) -> Page:
    """Open the gallery itself (outside the UI's frame) with ``filters``; wait until it is filled."""
    page.goto(f"{runs.stack.api_url}/kling/?{urlencode(filters)}", wait_until="domcontentloaded")
    page.locator("#summary").filter(has_not_text="Loading").wait_for(timeout=PAGE_TIMEOUT_MS)
    return page


def log_in(page: Page, runs: ViewRuns) -> None:
    """Give the browser the admin's JWT as the ``_token`` cookie, as the UI's login does, and open the UI."""
    page.context.add_cookies([{"name": "_token", "value": runs.token, "url": runs.stack.api_url}])
    page.goto(f"{runs.stack.api_url}/", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)


def kling_frame(page: Page, src_part: str) -> Frame:
    """The Airflow UI's iframe that shows the Kling page whose address contains ``src_part``."""
    iframe = page.locator(f'iframe[src*="{src_part}"]')
    iframe.wait_for(timeout=PAGE_TIMEOUT_MS)
    frame = iframe.element_handle().content_frame()
    assert frame is not None
    frame.locator("#summary").filter(has_not_text="Loading").wait_for(timeout=PAGE_TIMEOUT_MS)
    return frame


def assert_plays(frame: Frame | Page, kling_task_id: str) -> None:
    """The card's ``<video>`` loads the landed H.264 video and its time advances while it plays."""
    video = frame.locator(f'article[data-kling-task-id="{kling_task_id}"] video').first
    video.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert video.get_attribute("data-video-state") == "landed"
    video.evaluate("v => { v.muted = true; return v.play(); }")
    frame.wait_for_function(
        "v => v.readyState >= 2 && v.currentTime > 0.3 && !v.error",
        arg=video.element_handle(),
        timeout=30_000,
    )
    start = video.evaluate("v => v.currentTime")
    assert video.evaluate("v => v.currentSrc").startswith("http")
    frame.wait_for_timeout(400)
    assert video.evaluate("v => v.currentTime") != start or video.evaluate("v => v.ended")


def test_every_endpoint_refuses_an_unauthenticated_request(view_runs: ViewRuns) -> None:
    ti = urlencode({"dag_id": GALLERY_DAG, "run_id": view_runs.gallery_run, "task_id": "generate"})
    paths = [
        "/kling/",
        f"/kling/task-instance?{ti}",
        "/kling/static/gallery.js",
        "/kling/static/common.js",
        "/kling/api/videos",
        f"/kling/api/task-instance?{ti}",
        f"/kling/api/live?{ti}",
        f"/kling/video?{ti}&index=0",
    ]
    with httpx.Client(base_url=view_runs.stack.api_url, timeout=30, follow_redirects=False) as client:
        for path in paths:
            assert client.get(path).status_code == 401, path
        client.cookies.set("_token", "forged")
        for path in paths:
            assert client.get(path).status_code in (401, 403), path


def test_video_endpoint_redirects_to_a_short_lived_presigned_url(view_runs: ViewRuns) -> None:
    ti = urlencode({"dag_id": GALLERY_DAG, "run_id": view_runs.gallery_run, "task_id": "land"})
    with httpx.Client(base_url=view_runs.stack.api_url, timeout=30, follow_redirects=False) as client:
        client.cookies.set("_token", view_runs.token)
        answer = client.get(f"/kling/video?{ti}&index=0")
    assert answer.status_code == 307
    location = answer.headers["location"]
    assert 0 < int(parse_qs(urlsplit(location).query)["X-Amz-Expires"][0]) <= 900
    video = httpx.get(location, timeout=30)
    assert (video.status_code, video.headers["content-type"]) == (200, "video/mp4")
    assert video.content[4:8] == b"ftyp"


def test_no_key_credential_or_presigned_url_in_any_answer(view_runs: ViewRuns) -> None:
    paths = ["/kling/", "/kling/static/common.js", "/kling/static/gallery.js", "/kling/api/videos"]
    for dag_id, run_id in ((GALLERY_DAG, view_runs.gallery_run), (IN_FLIGHT_DAG, view_runs.in_flight_run)):
        ti = urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": "generate"})
        paths += [f"/kling/task-instance?{ti}", f"/kling/api/task-instance?{ti}", f"/kling/api/live?{ti}"]
    with httpx.Client(base_url=view_runs.stack.api_url, timeout=30) as client:
        client.cookies.set("_token", view_runs.token)
        for path in paths:
            answer = client.get(path)
            assert answer.status_code == 200, path
            for secret in view_runs.secrets:
                assert secret not in answer.text, path
            assert "X-Amz-" not in answer.text, path
            assert "s3://" not in answer.text, path


def test_nav_entry_gallery_and_playback(view_runs: ViewRuns, page: Page) -> None:
    log_in(page, view_runs)
    page.get_by_role("button", name=re.compile("Browse")).click()
    entry = page.get_by_role("menuitem", name="Kling videos")
    entry.wait_for(timeout=PAGE_TIMEOUT_MS)
    entry.click()
    page.wait_for_url(re.compile(r"/plugin/kling-videos"), timeout=PAGE_TIMEOUT_MS)
    frame = kling_frame(page, "/kling/")
    card = frame.locator(f'article[data-kling-task-id="{view_runs.gallery_kling_task_id}"]')
    card.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert "Succeeded" in card.locator('[data-role="status"]').inner_text()
    assert "16:9" in card.inner_text()
    assert_plays(frame, view_runs.gallery_kling_task_id)
    per_dag = frame.locator("#totals-dag tbody").inner_text()
    assert GALLERY_DAG in per_dag
    ui_screenshot(page, "kling-videos-in-airflow")
    card.get_by_role("link", name="Task instance").click()  # leaves the frame for the UI's own page
    page.wait_for_url(re.compile(rf"/dags/{GALLERY_DAG}/runs/{view_runs.gallery_run}/tasks/generate"))


def test_xss_prompt_renders_as_text(view_runs: ViewRuns, page: Page) -> None:
    log_in(page, view_runs)
    gallery(page, view_runs, dag_id=GALLERY_DAG)
    card = page.locator(f'article[data-kling-task-id="{view_runs.gallery_kling_task_id}"]')
    card.locator("details.prompt summary").click()  # the prompt is long: shortened, full text on demand
    assert XSS_PROMPT in card.locator("details.prompt > p").inner_text()
    assert page.evaluate("window.__klingXss") is None
    assert page.locator("main img, main script").count() == 0
    ui_screenshot(page, "kling-videos-xss-prompt")


def test_filters(view_runs: ViewRuns, page: Page) -> None:
    log_in(page, view_runs)
    both = {view_runs.gallery_kling_task_id, view_runs.in_flight_kling_task_id}

    def shown() -> set[str]:
        return set(
            page.locator("article.card").evaluate_all("cards => cards.map(c => c.dataset.klingTaskId)")
        )

    gallery(page, view_runs)
    assert both <= shown()
    gallery(page, view_runs, dag_id=IN_FLIGHT_DAG)
    assert shown() == {view_runs.in_flight_kling_task_id}
    gallery(page, view_runs, status="landed")
    assert shown() == {view_runs.gallery_kling_task_id}
    gallery(page, view_runs, since="2999-01-01")
    assert shown() == set()
    assert page.locator("#summary").inner_text() == "No Kling task matches these filters."
    gallery(page, view_runs)  # the form drives the same query string
    page.select_option("#filter-status", "in_flight")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"status=in_flight"))
    page.locator("#summary").filter(has_not_text="Loading").wait_for()
    assert shown() == {view_runs.in_flight_kling_task_id}


def test_task_instance_tab_shows_the_tries_video(view_runs: ViewRuns, page: Page) -> None:
    log_in(page, view_runs)
    path = f"/dags/{GALLERY_DAG}/runs/{quote(view_runs.gallery_run)}/tasks/generate"
    page.goto(f"{view_runs.stack.api_url}{path}", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("tab", name="Kling").or_(
        page.get_by_role("link", name="Kling", exact=True)
    ).first.click()
    frame = kling_frame(page, "/kling/task-instance")
    assert view_runs.gallery_kling_task_id in frame.locator("#summary").inner_text()
    assert_plays(frame, view_runs.gallery_kling_task_id)
    ui_screenshot(page, "kling-task-instance-tab")


def test_in_flight_task_shows_running_for(view_runs: ViewRuns, page: Page) -> None:
    log_in(page, view_runs)
    gallery(page, view_runs, dag_id=IN_FLIGHT_DAG)
    status = page.locator(
        f'article[data-kling-task-id="{view_runs.in_flight_kling_task_id}"] [data-role="status"]'
    )
    status.filter(has_text=RUNNING_FOR).wait_for(timeout=PAGE_TIMEOUT_MS)
    ui_screenshot(page, "kling-videos-in-flight")
    path = f"/dags/{IN_FLIGHT_DAG}/runs/{quote(view_runs.in_flight_run)}/tasks/generate"
    page.goto(f"{view_runs.stack.api_url}{path}", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("tab", name="Kling").or_(
        page.get_by_role("link", name="Kling", exact=True)
    ).first.click()
    frame = kling_frame(page, "/kling/task-instance")
    frame.locator('[data-role="status"]').filter(has_text=RUNNING_FOR).wait_for(timeout=PAGE_TIMEOUT_MS)
    assert frame.locator(".no-video").inner_text().startswith("No video yet")
    ui_screenshot(page, "kling-task-instance-in-flight")
