"""Tests of the local ModelVerse simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import selectors
import signal
import struct
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import httpx
import pydantic
import pytest

import airflow_provider_kling.testing as testing_package
from airflow_provider_kling.constants import (
    STATUS_PATH,
    SUBMIT_PATH,
    VENDOR_CODE_RESOURCES_INSUFFICIENT,
    VENDOR_CODE_RESPONSE_ERROR,
    VENDOR_CODE_TASK_CREATION_ERROR,
)
from airflow_provider_kling.testing import KlingSimulator, KlingSimulatorClient, KlingSimulatorError
from airflow_provider_kling.testing.simulator import (
    MEDIA_FILES,
    ResultBody,
    _parse_range,
    _validation_message,
    make_fault,
    result_video,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(60)

MEDIA_DIR = Path(testing_package.__file__).parent / "media"
# Loading the CA bundle costs ~0.15 s per httpx client; these plain-HTTP tests share one TLS context.
TLS_CONTEXT = httpx.create_ssl_context()
TEXT_TO_VIDEO: dict[str, Any] = {
    "model": "kling-v3-omni",
    "input": {"prompt": "A beautiful sunset over the ocean with waves gently crashing"},
    "parameters": {"mode": "pro", "aspect_ratio": "16:9", "duration": 5, "sound": "on"},
}
VIDEO_EDIT: dict[str, Any] = {
    "model": "kling-v3-omni",
    "input": {"prompt": "Add a cinematic color grading effect"},
    "parameters": {
        "mode": "pro",
        "video_list": [
            {"video_url": "https://example.com/input.mp4", "refer_type": "base", "keep_original_sound": "yes"}
        ],
    },
}


def client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=TLS_CONTEXT, **{"timeout": 10, **kwargs})


def text_to_video(**parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(TEXT_TO_VIDEO))
    body["parameters"].update(parameters)
    return body


@pytest.fixture
def sim(kling_simulator: KlingSimulator) -> KlingSimulator:
    # Tasks walk by the simulator's clock: tests move it with advance_time() instead of sleeping.
    kling_simulator.task_seconds = 10.0
    return kling_simulator


@pytest.fixture
def api(sim: KlingSimulator) -> Iterator[httpx.Client]:
    with client(base_url=sim.base_url, headers={"Authorization": sim.api_key}) as api_client:
        yield api_client


def submit(api: httpx.Client, body: dict[str, Any] | None = None) -> str:
    response = api.post(SUBMIT_PATH, json=body or TEXT_TO_VIDEO)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["output"]["task_id"]
    return task_id


def status(api: httpx.Client, task_id: str) -> dict[str, Any]:
    response = api.get(STATUS_PATH, params={"task_id": task_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished_task_urls(
    sim: KlingSimulator, api: httpx.Client, body: dict[str, Any] | None = None
) -> list[str]:
    task_id = submit(api, body)
    sim.advance_time(sim.task_seconds)
    output = status(api, task_id)["output"]
    assert output["task_status"] == "Success"
    urls: list[str] = output["urls"]
    return urls


def assert_error_body(response: httpx.Response, status_code: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


# --------------------------------------------------------------------------------------------------
# Submit and status
# --------------------------------------------------------------------------------------------------


def test_task_walks_pending_running_success(sim: KlingSimulator, api: httpx.Client) -> None:
    submit_response = api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    assert submit_response.status_code == 200
    submitted = submit_response.json()
    assert set(submitted) == {"output", "request_id"}
    assert submitted["request_id"] == submit_response.headers["x-request-id"]
    task_id = submitted["output"]["task_id"]

    pending = status(api, task_id)
    assert pending["output"] == {
        "task_id": task_id,
        "task_status": "Pending",
        "submit_time": pending["output"]["submit_time"],
    }
    assert abs(pending["output"]["submit_time"] - time.time()) < 60
    assert pending["request_id"]

    sim.advance_time(2.5)  # past the first fifth of 10 s
    assert status(api, task_id)["output"]["task_status"] == "Running"

    sim.advance_time(7.5)
    done = status(api, task_id)
    output = done["output"]
    assert output["task_status"] == "Success"
    assert output["finish_time"] - output["submit_time"] == pytest.approx(10, abs=1)
    assert output["urls"] == [f"{sim.base_url}/results/{task_id}/1.mp4"]
    assert done["usage"] == {"duration": 5}
    assert sim.submitted == [TEXT_TO_VIDEO]
    assert sim.requests["submit"] == 1
    assert sim.requests["status"] == 3


def test_task_finishes_on_the_real_clock(kling_simulator: KlingSimulator) -> None:
    # The conftest default (0.3 s): poll a bounded number of times, as a client would.
    with client(base_url=kling_simulator.base_url, headers={"Authorization": "sim-key"}) as api:
        task_id = submit(api)
        seen = []
        for _ in range(100):
            seen.append(status(api, task_id)["output"]["task_status"])
            if seen[-1] == "Success":
                break
            time.sleep(0.02)
    assert seen[-1] == "Success"
    assert seen[0] in ("Pending", "Running")


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        pytest.param(text_to_video(duration=10), 10, id="R5-duration-billed"),
        pytest.param(text_to_video(duration=None), 5, id="R5-default-5"),
        pytest.param(VIDEO_EDIT, 5, id="R5-base-edit-bills-5"),
    ],
)
def test_usage_duration_is_the_effective_duration(
    sim: KlingSimulator, api: httpx.Client, body: dict[str, Any], usage: int
) -> None:
    body = json.loads(json.dumps(body))
    body["parameters"] = {key: value for key, value in body["parameters"].items() if value is not None}
    task_id = submit(api, body)
    sim.advance_time(10)
    assert status(api, task_id)["usage"] == {"duration": usage}


def test_fail_next_tasks(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.fail_next_tasks(1, message="content moderation")
    failing, succeeding = submit(api), submit(api)
    sim.advance_time(10)
    failed = status(api, failing)
    assert failed["output"]["task_status"] == "Failure"
    assert failed["output"]["error_message"] == "content moderation"
    assert "urls" not in failed["output"]
    assert failed["output"]["finish_time"] >= failed["output"]["submit_time"]
    assert failed["usage"] == {"duration": 5}
    assert status(api, succeeding)["output"]["task_status"] == "Success"
    assert sim.get_task(failing).error_message == "content moderation"


def test_unknown_task_is_404(api: httpx.Client) -> None:
    response = api.get(STATUS_PATH, params={"task_id": "0" * 32})
    assert_error_body(response, 404, "task_not_found")


def test_missing_task_id_is_400(api: httpx.Client) -> None:
    assert_error_body(api.get(STATUS_PATH), 400, "missing_task_id")


def test_wrong_method_is_405(api: httpx.Client) -> None:
    response = api.get(SUBMIT_PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# --------------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        pytest.param("sim-key", 200, id="bare-key"),
        pytest.param("Bearer sim-key", 401, id="bearer-prefix-rejected"),
        pytest.param("bearer sim-key", 401, id="bearer-lowercase-rejected"),
        pytest.param("wrong-key", 401, id="wrong-key"),
        pytest.param(None, 401, id="missing"),
    ],
)
@pytest.mark.parametrize("endpoint", ["submit", "status"])
def test_auth_takes_the_bare_key(
    sim: KlingSimulator, endpoint: str, authorization: str | None, expected: int
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with client(base_url=sim.base_url, headers={"Authorization": sim.api_key}) as owner:
        task_id = submit(owner)
    with client(base_url=sim.base_url, headers=headers) as caller:
        if endpoint == "submit":
            response = caller.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
        else:
            response = caller.get(STATUS_PATH, params={"task_id": task_id})
    if expected == 200:
        assert response.status_code == 200
        return
    error = assert_error_body(response, 401, "invalid_api_key")
    assert error["type"] == "authentication_error"
    assert "sim-key" not in response.text
    assert len(sim.submitted) == 1  # a refused submit creates nothing


def test_tasks_and_external_ids_are_scoped_per_key() -> None:
    with KlingSimulator(api_key="key-a", additional_api_keys=["key-b"], task_seconds=0) as sim:
        with (
            client(base_url=sim.base_url, headers={"Authorization": "key-a"}) as user_a,
            client(base_url=sim.base_url, headers={"Authorization": "key-b"}) as user_b,
        ):
            body = text_to_video(external_task_id="shared-id")
            task_a = submit(user_a, body)
            submit(user_b, body)  # the same external id under another key is fine
            assert_error_body(user_b.get(STATUS_PATH, params={"task_id": task_a}), 404, "task_not_found")
        assert [task.external_task_id for task in sim.find_tasks(external_task_id="shared-id")] == [
            "shared-id",
            "shared-id",
        ]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**TEXT_TO_VIDEO, "model": "kling-v2"}, id="wrong-model"),
        pytest.param(text_to_video(duration="five"), id="R5-duration-not-an-integer"),
        pytest.param(text_to_video(mode="ultra"), id="R13-unknown-mode"),
        pytest.param(text_to_video(aspect_ratio="4:3"), id="R4-unknown-aspect-ratio"),
        pytest.param(text_to_video(colour="red"), id="unknown-field"),
    ],
)
def test_invalid_request_is_400_task_creation_error(
    sim: KlingSimulator, api: httpx.Client, body: dict[str, Any]
) -> None:
    error = assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)
    assert error["type"] == "invalid_request_error"
    assert sim.submitted == []
    assert sim.tasks == []


def test_validation_message_names_the_field(api: httpx.Client) -> None:
    error = assert_error_body(
        api.post(SUBMIT_PATH, json=text_to_video(mode="ultra")), 400, VENDOR_CODE_TASK_CREATION_ERROR
    )
    assert "parameters.mode" in error["message"]
    assert error["param"] == "parameters.mode"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        pytest.param({"model": "kling-v3-omni", "parameters": {"aspect_ratio": "16:9"}}, "R1", id="R1"),
        pytest.param(
            text_to_video(
                multi_shot=True,
                shot_type="customize",
                multi_prompt=[{"index": 1, "prompt": "a shot", "duration": "2"}],
            ),
            "R11",
            id="R11",
        ),
        pytest.param({**TEXT_TO_VIDEO, "parameters": {"duration": 5}}, "R4", id="R4"),
    ],
)
def test_rule_violation_is_400_with_the_rule_message(
    sim: KlingSimulator, api: httpx.Client, body: dict[str, Any], rule: str
) -> None:
    error = assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)
    assert error["message"].startswith(f"{rule} ")
    assert sim.submitted == []


def test_every_violation_is_reported(api: httpx.Client) -> None:
    body = text_to_video(aspect_ratio="4:3", mode="ultra")
    error = assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)
    messages = error["message"].split("; ")
    assert len(messages) == 2
    assert any("parameters.aspect_ratio" in message for message in messages)
    assert any("parameters.mode" in message for message in messages)
    assert error["param"] is None


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        (
            {"image_list": [{"image_url": "https://example.com/a.png"}, {"image_url": "S3://bucket/b.png"}]},
            "parameters.image_list[1].image_url",
        ),
        (
            {"aspect_ratio": None, "video_list": [{"video_url": "s3://bucket/in.mp4", "refer_type": "base"}]},
            "parameters.video_list[0].video_url",
        ),
    ],
)
def test_s3_inputs_are_refused(
    sim: KlingSimulator, api: httpx.Client, parameters: dict[str, Any], field: str
) -> None:
    body = text_to_video(**parameters)
    body["parameters"] = {key: value for key, value in body["parameters"].items() if value is not None}
    body["parameters"].pop("sound", None)
    if "video_list" in parameters:
        body["parameters"].pop("duration")  # R5: a duration is ignored with a base video
    error = assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)
    assert error["message"].startswith(f"{field}: the API cannot read s3:// URLs")
    assert sim.submitted == []


def test_rule_messages_are_joined_unprefixed() -> None:
    class Probe(pydantic.BaseModel):
        a: int = 0

        @pydantic.model_validator(mode="after")
        def _rules(self) -> Probe:
            raise ValueError("R11 parameters.multi_prompt: shot durations add up to 4 s, but duration is 5 s")

    with pytest.raises(pydantic.ValidationError) as raised:
        Probe.model_validate({"a": 1})
    message, param = _validation_message(raised.value)
    assert message == "R11 parameters.multi_prompt: shot durations add up to 4 s, but duration is 5 s"
    assert param is None

    class Two(pydantic.BaseModel):
        a: int
        b: int

    with pytest.raises(pydantic.ValidationError) as raised:
        Two.model_validate({"a": "x", "b": "y"})
    message, param = _validation_message(raised.value)
    assert message.startswith("a: ")
    assert "; b: " in message
    assert param is None


@pytest.mark.parametrize(
    "raw",
    [pytest.param(b"{not json", id="bad-json"), pytest.param(b"[1, 2]", id="not-an-object"), b"\xff\xfe"],
)
def test_unparsable_body_is_400(sim: KlingSimulator, api: httpx.Client, raw: bytes) -> None:
    response = api.post(SUBMIT_PATH, content=raw, headers={"Content-Type": "application/json"})
    assert_error_body(response, 400, VENDOR_CODE_TASK_CREATION_ERROR)
    assert sim.submitted == []


def test_duplicate_external_task_id_is_400(sim: KlingSimulator, api: httpx.Client) -> None:
    body = text_to_video(external_task_id="order-42")
    first = submit(api, body)
    error = assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)
    assert "order-42" in error["message"]
    assert "unique" in error["message"]
    assert [task.task_id for task in sim.find_tasks(external_task_id="order-42")] == [first]
    assert len(sim.submitted) == 1


def test_the_documented_examples_are_accepted(sim: KlingSimulator, api: httpx.Client) -> None:
    image_reference = text_to_video(
        image_list=[
            {"image_url": "https://example.com/first_frame.jpg", "type": "first_frame"},
            {"image_url": "https://example.com/last_frame.jpg", "type": "end_frame"},
        ]
    )
    del image_reference["parameters"]["sound"]
    multi_shot = {
        "model": "kling-v3-omni",
        "parameters": {
            "mode": "pro",
            "aspect_ratio": "16:9",
            "duration": 5,
            "multi_shot": True,
            "shot_type": "customize",
            "multi_prompt": [
                {"index": 1, "prompt": "<<<image_1>>>A person sitting on a park bench", "duration": "2"},
                {"index": 2, "prompt": "A car speeding down a rainy street", "duration": "3"},
            ],
            "image_list": [{"image_url": "https://example.com/person.jpg"}],
            "sound": "on",
        },
    }
    for body in (TEXT_TO_VIDEO, image_reference, VIDEO_EDIT, multi_shot):
        submit(api, body)
    assert sim.submitted == [TEXT_TO_VIDEO, image_reference, VIDEO_EDIT, multi_shot]


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "file_name"),
    [
        pytest.param({"aspect_ratio": "16:9"}, "result_16x9.mp4", id="16:9"),
        pytest.param({"aspect_ratio": "9:16"}, "result_9x16.mp4", id="9:16"),
        pytest.param({"aspect_ratio": "1:1"}, "result_1x1.mp4", id="1:1"),
        pytest.param(None, "result_16x9.mp4", id="R4-edit-without-aspect-ratio-is-16:9"),
    ],
)
def test_result_is_the_fixture_byte_for_byte(
    sim: KlingSimulator, api: httpx.Client, parameters: dict[str, Any] | None, file_name: str
) -> None:
    body = VIDEO_EDIT if parameters is None else text_to_video(**parameters)
    [url] = finished_task_urls(sim, api, body)
    with client() as anonymous:  # result URLs need no key, like pre-signed URLs
        response = anonymous.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == (MEDIA_DIR / file_name).read_bytes()
    assert int(response.headers["content-length"]) == len(response.content)


def test_results_per_task(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.results_per_task = 2
    urls = finished_task_urls(sim, api)
    assert [url.rsplit("/", 1)[1] for url in urls] == ["1.mp4", "2.mp4"]
    assert [api.get(url).status_code for url in urls] == [200, 200]
    assert api.get(urls[0].replace("/1.mp4", "/3.mp4")).status_code == 404


def test_result_of_an_unfinished_task_is_404(sim: KlingSimulator, api: httpx.Client) -> None:
    task_id = submit(api)
    response = api.get(f"/results/{task_id}/1.mp4")
    assert response.status_code == 404
    assert b"<Code>NoSuchKey</Code>" in response.content


def test_range_requests_resume_a_download(sim: KlingSimulator, api: httpx.Client) -> None:
    [url] = finished_task_urls(sim, api)
    whole = (MEDIA_DIR / "result_16x9.mp4").read_bytes()
    size = len(whole)

    head = api.get(url, headers={"Range": "bytes=0-999"})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-999/{size}"
    assert head.content == whole[:1000]

    etag = head.headers["etag"]
    rest = api.get(url, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    assert head.content + rest.content == whole

    suffix = api.get(url, headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206
    assert suffix.content == whole[-100:]

    stale = api.get(url, headers={"Range": "bytes=1000-", "If-Range": '"another-version"'})
    assert stale.status_code == 200
    assert stale.content == whole

    unsatisfiable = api.get(url, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"

    headers_only = api.head(url)
    assert headers_only.status_code == 200
    assert int(headers_only.headers["content-length"]) == size
    assert headers_only.content == b""


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=90-200", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=100-", False),
        ("bytes=-0", False),
        ("bytes=9-5", None),
        ("bytes=0-1,5-9", None),
        ("items=0-9", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert _parse_range(header, 100) == expected


def test_result_expires_after_its_ttl(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.result_ttl_seconds = 60
    [url] = finished_task_urls(sim, api)
    assert api.get(url).status_code == 200
    sim.advance_time(61)
    expired = api.get(url)
    assert expired.status_code == 403
    assert expired.headers["content-type"] == "application/xml"
    assert b"<Code>AccessDenied</Code>" in expired.content
    assert b"expired" in expired.content


def test_default_ttl_is_24_hours(sim: KlingSimulator, api: httpx.Client) -> None:
    [url] = finished_task_urls(sim, api)
    sim.advance_time(24 * 3600 - 5)
    assert api.get(url).status_code == 200
    sim.advance_time(10)
    assert api.get(url).status_code == 403


def test_padded_result_is_exactly_n_bytes_and_playable(
    sim: KlingSimulator, api: httpx.Client, tmp_path: Path
) -> None:
    size = 3 * 1024 * 1024 + 7
    sim.result_size_bytes = size
    [url] = finished_task_urls(sim, api)
    path = tmp_path / "padded.mp4"
    with api.stream("GET", url) as response, path.open("wb") as file:
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_bytes():
            file.write(chunk)
    data = path.read_bytes()
    video = result_video("16:9")
    assert len(data) == size
    assert data[: len(video)] == video
    assert data[len(video) : len(video) + 8] == struct.pack(">I4s", size - len(video), b"free")
    assert data[len(video) + 8 :] == bytes(size - len(video) - 8)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48

    tail = api.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert tail.status_code == 206
    assert tail.content == bytes(10)


def test_padded_result_over_4_gib_uses_a_64_bit_box() -> None:
    video = result_video("1:1")
    size = 5 * 1024**3
    body = ResultBody(video, size)
    assert body.size == size
    header = b"".join(bytes(chunk) for chunk in body.iter_range(len(video), len(video) + 16))
    assert header == struct.pack(">I4sQ", 1, b"free", size - len(video))
    tail = b"".join(bytes(chunk) for chunk in body.iter_range(size - 1000, size + 50))
    assert tail == bytes(1000)
    chunks = list(body.iter_range(0, 2 * 1024 * 1024))
    assert max(len(chunk) for chunk in chunks) <= 256 * 1024  # streamed in bounded chunks


def test_padded_result_must_fit_the_box_header() -> None:
    video = result_video("16:9")
    with pytest.raises(KlingSimulatorError, match="at least"):
        ResultBody(video, len(video) + 7)
    assert ResultBody(video, len(video)).size == len(video)
    with pytest.raises(KlingSimulatorError, match="result_size_bytes"):
        KlingSimulator(result_size_bytes=1000)


@pytest.mark.parametrize(
    ("file_name", "width", "height"),
    [("result_16x9.mp4", 320, 180), ("result_9x16.mp4", 180, 320), ("result_1x1.mp4", 240, 240)],
)
def test_fixtures_are_small_playable_h264(file_name: str, width: int, height: int) -> None:
    path = MEDIA_DIR / file_name
    assert path.stat().st_size < 100 * 1024
    with av.open(str(path)) as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (width, height)
        assert stream.average_rate == 24
        frames = list(container.decode(stream))
    assert len(frames) == 48  # 2 s at 24 fps
    assert bytes(frames[0].planes[0]) != bytes(frames[-1].planes[0])  # it moves


def test_fixtures_cover_every_aspect_ratio() -> None:
    assert sorted(MEDIA_FILES) == ["16:9", "1:1", "9:16"]
    for ratio, file_name in MEDIA_FILES.items():
        assert result_video(ratio) == (MEDIA_DIR / file_name).read_bytes()
    with pytest.raises(KlingSimulatorError):
        result_video("4:3")


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_rate_limit_fault(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.inject_fault("submit", "rate_limit", retry_after=2)
    limited = api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    error = assert_error_body(limited, 429, VENDOR_CODE_RESOURCES_INSUFFICIENT)
    assert error["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] == "2"
    assert sim.submitted == []
    submit(api)  # the fault fired once
    assert len(sim.submitted) == 1
    assert sim.stats()["faults_fired"] == {"submit:rate_limit": 1}


def test_rate_limit_without_retry_after(sim: KlingSimulator, api: httpx.Client) -> None:
    task_id = submit(api)
    sim.inject_fault("status", "rate_limit", retry_after=None, code=None)
    limited = api.get(STATUS_PATH, params={"task_id": task_id})
    assert_error_body(limited, 429, None)
    assert "retry-after" not in limited.headers


@pytest.mark.parametrize("status_code", [500, 502, 503, 504])
def test_server_error_fault(sim: KlingSimulator, api: httpx.Client, status_code: int) -> None:
    task_id = submit(api)
    sim.inject_fault("status", "server_error", status=status_code)
    response = api.get(STATUS_PATH, params={"task_id": task_id})
    assert assert_error_body(response, status_code, VENDOR_CODE_RESPONSE_ERROR)["type"] == "server_error"
    assert status(api, task_id)["output"]["task_status"] == "Pending"


def test_html_error_fault(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.inject_fault("submit", "html_error")
    response = api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text.startswith("<html>")
    assert "502 Bad Gateway" in response.text
    assert sim.submitted == []


def test_malformed_json_fault(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.inject_fault("submit", "malformed_json")
    response = api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_slow_fault_delays_the_answer(sim: KlingSimulator, api: httpx.Client) -> None:
    task_id = submit(api)
    sim.inject_fault("status", "slow", delay=2.0)
    with pytest.raises(httpx.ReadTimeout):
        api.get(STATUS_PATH, params={"task_id": task_id}, timeout=0.1)
    assert status(api, task_id)["output"]["task_id"] == task_id  # a new connection, no fault left


def test_reset_fault_closes_without_answering(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.inject_fault("submit", "reset")
    with pytest.raises(httpx.TransportError):
        api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    assert sim.submitted == []
    submit(api)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("server_error", {"status": 500}),
        ("html_error", {}),
        ("malformed_json", {}),
        ("rate_limit", {}),
        ("reset", {}),
    ],
)
def test_fault_after_create_bills_the_task(
    sim: KlingSimulator, api: httpx.Client, kind: str, options: dict[str, Any]
) -> None:
    sim.inject_fault("submit", kind, after_create=True, **options)  # type: ignore[arg-type]
    body = text_to_video(external_task_id="pay-once")
    try:
        response = api.post(SUBMIT_PATH, json=body)
    except httpx.TransportError:
        pass
    else:
        assert response.status_code != 200 or kind == "malformed_json"
    assert sim.submitted == [body]
    [task] = sim.find_tasks(external_task_id="pay-once")
    assert task.status == "Pending"
    # A client that retries the same logical request is refused instead of billed twice.
    assert_error_body(api.post(SUBMIT_PATH, json=body), 400, VENDOR_CODE_TASK_CREATION_ERROR)


def test_slow_fault_after_create_times_out_the_client_but_creates_the_task(
    sim: KlingSimulator, api: httpx.Client
) -> None:
    sim.inject_fault("submit", "slow", delay=2.0, after_create=True)
    with pytest.raises(httpx.ReadTimeout):
        api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO, timeout=0.1)
    for _ in range(100):
        if sim.submitted:
            break
        time.sleep(0.01)
    assert sim.submitted == [TEXT_TO_VIDEO]


def test_fault_fires_the_given_number_of_times_in_order(sim: KlingSimulator, api: httpx.Client) -> None:
    task_id = submit(api)
    sim.inject_fault("status", "server_error", times=2, status=503)
    sim.inject_fault("status", "rate_limit")
    codes = [api.get(STATUS_PATH, params={"task_id": task_id}).status_code for _ in range(4)]
    assert codes == [503, 503, 429, 200]
    assert sim.pending_faults == []


def stream_until_error(
    api: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, bytes, httpx.TransportError | None]:
    """Download ``url`` chunk by chunk; return the response, the bytes received and the error, if any."""
    received = bytearray()
    with api.stream("GET", url, headers=headers) as response:
        try:
            for chunk in response.iter_bytes():
                received += chunk
        except httpx.TransportError as error:
            return response, bytes(received), error
    return response, bytes(received), None


def test_truncated_download_is_detectable(sim: KlingSimulator, api: httpx.Client) -> None:
    [url] = finished_task_urls(sim, api)
    sim.inject_fault("result", "truncate")
    response, received, error = stream_until_error(api, url)
    advertised = int(response.headers["content-length"])
    assert isinstance(error, httpx.RemoteProtocolError)
    assert advertised == len(result_video("16:9"))
    assert len(received) == advertised // 2
    assert received == result_video("16:9")[: advertised // 2]
    assert stream_until_error(api, url)[1:] == (result_video("16:9"), None)  # the next download is whole


def test_truncated_range_download(sim: KlingSimulator, api: httpx.Client) -> None:
    [url] = finished_task_urls(sim, api)
    sim.inject_fault("result", "truncate")
    response, received, error = stream_until_error(api, url, {"Range": "bytes=1000-2999"})
    assert response.status_code == 206
    assert response.headers["content-length"] == "2000"
    assert isinstance(error, httpx.RemoteProtocolError)
    assert received == result_video("16:9")[1000:2000]


@pytest.mark.parametrize(
    ("kind", "options", "status_code"),
    [
        ("expired", {}, 403),
        ("server_error", {"status": 503}, 503),
        ("html_error", {"status": 504}, 504),
        ("rate_limit", {}, 429),
    ],
)
def test_result_faults(
    sim: KlingSimulator, api: httpx.Client, kind: str, options: dict[str, Any], status_code: int
) -> None:
    [url] = finished_task_urls(sim, api)
    sim.inject_fault("result", kind, **options)  # type: ignore[arg-type]
    assert api.get(url).status_code == status_code
    assert api.get(url).status_code == 200


def test_result_reset_and_slow_faults(sim: KlingSimulator, api: httpx.Client) -> None:
    [url] = finished_task_urls(sim, api)
    sim.inject_fault("result", "reset")
    with pytest.raises(httpx.TransportError):
        api.get(url)
    sim.inject_fault("result", "slow", delay=2.0)
    with pytest.raises(httpx.ReadTimeout):
        api.get(url, timeout=0.1)
    assert api.get(url).status_code == 200


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"endpoint": "upload", "kind": "reset"}, "endpoint"),
        ({"endpoint": "submit", "kind": "explode"}, "kind"),
        ({"endpoint": "submit", "kind": "truncate"}, "applies to"),
        ({"endpoint": "status", "kind": "expired"}, "applies to"),
        ({"endpoint": "result", "kind": "malformed_json"}, "applies to"),
        ({"endpoint": "status", "kind": "reset", "after_create": True}, "after_create"),
        ({"endpoint": "submit", "kind": "slow", "delay": -1}, "delay"),
        ({"endpoint": "submit", "kind": "slow", "delay": 10_000}, "delay"),
        ({"endpoint": "submit", "kind": "server_error", "status": 418}, "status"),
        ({"endpoint": "submit", "kind": "html_error", "status": 200}, "status"),
        ({"endpoint": "submit", "kind": "rate_limit", "retry_after": "soon\r\nX-Evil: 1"}, "retry_after"),
        ({"endpoint": "submit", "kind": "rate_limit", "colour": "red"}, "Unknown option"),
        ({"endpoint": "submit", "kind": "reset", "times": 0}, "times"),
    ],
)
def test_invalid_faults_are_refused(
    sim: KlingSimulator, api: httpx.Client, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(KlingSimulatorError, match=match):
        make_fault(**arguments)
    response = api.post("/_simulator/faults", json=arguments)
    assert response.status_code == 400
    assert match in response.json()["error"]["message"]
    assert sim.pending_faults == []


# --------------------------------------------------------------------------------------------------
# The admin API
# --------------------------------------------------------------------------------------------------


def test_admin_api(sim: KlingSimulator) -> None:
    with (
        KlingSimulatorClient(sim.base_url) as admin,
        client(base_url=sim.base_url, headers={"Authorization": "sim-key"}) as api,
    ):
        fault = admin.inject_fault("status", "server_error", times=2, status=502)
        assert fault == {
            "endpoint": "status",
            "kind": "server_error",
            "times": 2,
            "after_create": False,
            "status": 502,
            "code": VENDOR_CODE_RESPONSE_ERROR,
            "message": "Task response error",
        }
        assert admin.pending_faults() == [fault]
        assert admin.clear_faults() == 1
        assert sim.pending_faults == []

        assert admin.configure(task_seconds=4, results_per_task=2)["task_seconds"] == 4
        assert sim.task_seconds == 4
        task_id = submit(api, text_to_video(external_task_id="lookup-me"))
        admin.advance_time(4)
        [found] = admin.tasks(external_task_id="lookup-me")
        assert found["output"]["task_id"] == task_id
        assert found["output"]["task_status"] == "Success"
        assert len(found["output"]["urls"]) == 2
        assert admin.tasks(external_task_id="nobody") == []
        assert len(admin.tasks()) == 1
        assert admin.submitted() == [text_to_video(external_task_id="lookup-me")]

        admin.fail_next_tasks(2, message="moderated")
        assert admin.stats()["failures_pending"] == 2
        stats = admin.stats()
        assert stats["tasks"] == 1
        assert stats["requests"]["submit"] == 1
        assert stats["settings"]["results_per_task"] == 2

        admin.reset()
        assert sim.tasks == []
        stats = admin.stats()
        assert (stats["failures_pending"], stats["faults_pending"], stats["submitted"]) == (0, 0, 0)
        assert stats["settings"]["results_per_task"] == 1


def test_admin_api_refuses_bad_requests(sim: KlingSimulator) -> None:
    with client(base_url=f"{sim.base_url}/_simulator") as admin:
        assert admin.get("/nothing").status_code == 404
        assert admin.put("/faults", json={}).status_code == 404
        invalid = admin.post("/faults", content=b"{nope", headers={"Content-Type": "application/json"})
        assert invalid.status_code == 400
        assert admin.post("/faults", json=[1]).status_code == 400
        assert admin.post("/faults", json={"kind": "reset"}).status_code == 400  # no endpoint
        assert admin.post("/config", json={"task_seconds": -1}).status_code == 400
        assert admin.post("/config", json={"colour": "red"}).status_code == 400
        assert admin.post("/fail-next-tasks", json={"n": 0}).status_code == 400
        assert admin.post("/advance", json={"seconds": "a while"}).status_code == 400
    assert sim.pending_faults == []


def test_reset_restores_the_constructor_settings() -> None:
    with KlingSimulator(task_seconds=3, results_per_task=2, result_ttl_seconds=50) as sim:
        sim.task_seconds = 7
        sim.results_per_task = 1
        sim.result_size_bytes = 1024 * 1024
        sim.advance_time(100)
        sim.reset()
        assert (sim.task_seconds, sim.results_per_task, sim.result_ttl_seconds) == (3, 2, 50)
        assert sim.result_size_bytes is None
        assert sim.stats()["clock_offset_seconds"] == 0


# --------------------------------------------------------------------------------------------------
# Connections, lifecycle, secrecy
# --------------------------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(sim: KlingSimulator, api: httpx.Client) -> None:
    task_id = submit(api)
    for _ in range(20):
        status(api, task_id)
    assert sim.stats()["connections"]["total"] == 1


def test_hundreds_of_concurrent_keep_alive_clients() -> None:
    clients = 200
    with KlingSimulator(task_seconds=0) as sim:
        host, port = sim.base_url.removeprefix("http://").split(":")
        connections = [http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(clients)]
        try:
            for connection in connections:  # every connection stays open while the others are used
                connection.request("GET", f"{STATUS_PATH}?task_id=none", headers={"Authorization": "sim-key"})
            first = [connection.getresponse() for connection in connections]
            assert [response.status for response in first] == [404] * clients
            for response in first:
                response.read()
            assert sim.stats()["connections"] == {"total": clients, "open": clients, "max_open": clients}
            for connection in connections:  # a second request on each: kept alive, no new connection
                connection.request("GET", f"{STATUS_PATH}?task_id=none", headers={"Authorization": "sim-key"})
                response = connection.getresponse()
                response.read()
                assert response.status == 404
            assert sim.stats()["connections"]["total"] == clients
            assert sim.requests["status"] == 2 * clients
        finally:
            for connection in connections:
                connection.close()


def test_stop_ends_open_and_stalled_connections() -> None:
    sim = KlingSimulator(task_seconds=0).start()
    api = client(base_url=sim.base_url, headers={"Authorization": "sim-key"}, timeout=30)
    try:
        task_id = submit(api)
        sim.inject_fault("status", "slow", delay=60)
        stalled = subprocess.Popen(  # a request stuck in a 60 s delay, in another process
            [sys.executable, "-c", f"import httpx; httpx.get({sim.base_url + STATUS_PATH!r}, timeout=60)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):
            if sim.requests["status"]:
                break
            time.sleep(0.01)
        assert sim.requests["status"] == 1
        sim.stop()
        assert not sim.running
        assert stalled.wait(timeout=30) != 0  # its connection was closed, not answered
        with pytest.raises(httpx.TransportError):
            api.get(STATUS_PATH, params={"task_id": task_id})
    finally:
        api.close()
        sim.stop()


def test_key_stays_out_of_logs_and_repr(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-simulated-secret-0123456789"
    caplog.set_level(logging.DEBUG, logger="airflow_provider_kling")
    with KlingSimulator(api_key=secret, task_seconds=0) as sim:
        with client(base_url=sim.base_url, headers={"Authorization": secret}) as api:
            [url] = finished_task_urls(sim, api)
            api.get(url)
            api.get(STATUS_PATH, params={"task_id": "x"}, headers={"Authorization": f"Bearer {secret}"})
        text = repr(sim) + str(sim.stats())
    assert caplog.records
    assert secret not in caplog.text
    assert secret not in text


def test_base_url_needs_a_started_simulator() -> None:
    sim = KlingSimulator()
    with pytest.raises(KlingSimulatorError, match="not been started"):
        sim.base_url  # noqa: B018
    assert "stopped" in repr(sim)


def test_media_ship_inside_the_package() -> None:
    package_dir = Path(testing_package.__file__).parent
    for file_name in MEDIA_FILES.values():
        assert (package_dir / "media" / file_name).is_file()


# --------------------------------------------------------------------------------------------------
# Other processes: the CLI and the admin API
# --------------------------------------------------------------------------------------------------


def read_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no output within {timeout} s")
    line: str = stream.readline()
    return line


def test_cli_serves_until_sigterm() -> None:
    secret = "cli-secret-key-0123"
    executable = Path(sys.executable).parent / "kling-simulator"
    process = subprocess.Popen(
        [
            *(str(executable), "--port", "0", "--api-key", secret, "--task-seconds", "0"),
            *("--max-active-tasks", "3", "--verbose"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = read_line(process.stdout, timeout=30).strip()
        assert base_url.startswith("http://127.0.0.1:")
        with client(base_url=base_url, headers={"Authorization": secret}, timeout=10) as api:
            task_id = submit(api)
            assert status(api, task_id)["output"]["task_status"] == "Success"
            # The admin API drives the simulator in the other process.
            with KlingSimulatorClient(base_url) as admin:
                admin.inject_fault("status", "rate_limit", retry_after=3)
                limited = api.get(STATUS_PATH, params={"task_id": task_id})
                assert limited.status_code == 429
                assert limited.headers["retry-after"] == "3"
                assert admin.submitted() == [TEXT_TO_VIDEO]
                assert admin.stats()["faults_fired"] == {"status:rate_limit": 1}
                assert admin.stats()["settings"]["max_active_tasks"] == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert "GET /v1/tasks/status" in stderr  # --verbose logs requests ...
    assert secret not in base_url + stdout + stderr  # ... never the key


@pytest.mark.parametrize(
    ("arguments", "name"),
    [(("--task-seconds", "-1"), "task_seconds"), (("--max-active-tasks", "0"), "max_active_tasks")],
)
def test_cli_refuses_bad_settings(arguments: tuple[str, ...], name: str) -> None:
    executable = Path(sys.executable).parent / "kling-simulator"
    result = subprocess.run(
        [str(executable), "--port", "0", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert name in result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kling.testing", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kling-simulator")
    assert result.stderr == ""


def test_admin_api_from_another_process(sim: KlingSimulator, api: httpx.Client) -> None:
    script = textwrap.dedent(
        f"""
        from airflow_provider_kling.testing import KlingSimulatorClient
        with KlingSimulatorClient({sim.base_url!r}) as admin:
            admin.inject_fault("submit", "server_error", status=503, after_create=True)
            admin.fail_next_tasks(1, message="from another process")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env={**os.environ})
    failed = api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO)
    assert failed.status_code == 503
    [task] = sim.tasks
    sim.advance_time(10)
    assert sim.get_task(task.task_id).error_message == "from another process"


# --------------------------------------------------------------------------------------------------
# The shared fixtures (tests/conftest.py)
# --------------------------------------------------------------------------------------------------


def test_airflow_home_is_a_throwaway_directory() -> None:
    from airflow.configuration import AIRFLOW_HOME, conf

    assert os.environ["AIRFLOW_HOME"] == AIRFLOW_HOME
    assert Path(AIRFLOW_HOME).resolve() != (Path.home() / "airflow").resolve()
    assert conf.getboolean("core", "load_examples") is False
    assert conf.getboolean("core", "unit_test_mode") is False


def test_kling_connection_points_at_the_simulator(
    kling_connection: str, kling_simulator: KlingSimulator
) -> None:
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(kling_connection)
    assert connection.conn_type == "kling"
    assert connection.password == kling_simulator.api_key
    assert f"{connection.host}" in kling_simulator.base_url


def test_kling_simulator_is_reset_for_each_test(kling_simulator: KlingSimulator) -> None:
    # The previous tests left tasks, faults and changed settings behind on the same server.
    assert kling_simulator.tasks == []
    assert kling_simulator.pending_faults == []
    assert kling_simulator.task_seconds == pytest.approx(0.3)
    assert sum(kling_simulator.requests.values()) == 0


# --------------------------------------------------------------------------------------------------
# The admin API only answers loopback hosts and JSON bodies (CSRF, DNS rebinding)
# --------------------------------------------------------------------------------------------------


def raw_request(
    sim: KlingSimulator,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str | None = "default",
) -> tuple[int, dict[str, Any]]:
    """Send one request with exactly the given ``Host`` (``None``: no ``Host`` header at all)."""
    address, port = sim.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(address, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", f"127.0.0.1:{port}" if host == "default" else host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body or method in ("POST", "PUT"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        payload = response.read()
        return response.status, (json.loads(payload) if payload else {})
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("text/plain", b'{"task_seconds": 99}', id="text-plain"),
        pytest.param("text/plain;charset=UTF-8", b'{"task_seconds": 99}', id="text-plain-charset"),
        pytest.param("application/x-www-form-urlencoded", b'{"task_seconds": 99}', id="form"),
        pytest.param("multipart/form-data; boundary=x", b'{"task_seconds": 99}', id="multipart"),
        pytest.param("application/jsonp", b'{"task_seconds": 99}', id="json-lookalike"),
        pytest.param(None, b'{"task_seconds": 99}', id="no-content-type"),
        pytest.param(None, b"", id="empty-no-content-type"),
    ],
)
def test_admin_post_needs_a_json_content_type(
    sim: KlingSimulator, content_type: str | None, body: bytes
) -> None:
    # A web page can send any of these cross-site without a CORS preflight ("simple requests").
    headers = {} if content_type is None else {"Content-Type": content_type}
    for route in ("config", "faults", "reset", "advance", "fail-next-tasks"):
        status_code, payload = raw_request(sim, "POST", f"/_simulator/{route}", body=body, headers=headers)
        assert status_code == 415, (route, payload)
        assert "application/json" in payload["error"]["message"]
    status_code, _ = raw_request(sim, "PUT", "/_simulator/config", body=body, headers=headers)
    assert status_code == 415
    assert sim.task_seconds == 10.0
    assert sim.pending_faults == []
    assert sim.stats()["failures_pending"] == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON", "application/json; charset=utf-8"]
)
def test_admin_post_accepts_json(sim: KlingSimulator, content_type: str) -> None:
    status_code, payload = raw_request(
        sim, "POST", "/_simulator/config", body=b'{"task_seconds": 4}', headers={"Content-Type": content_type}
    )
    assert (status_code, payload["task_seconds"]) == (200, 4)
    assert sim.task_seconds == 4


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.example", id="foreign"),
        pytest.param("evil.example:{port}", id="foreign-with-port"),
        pytest.param("127.0.0.1.evil.example:{port}", id="loopback-prefix"),
        pytest.param("localhost.evil.example", id="localhost-prefix"),
        pytest.param("10.0.0.5:{port}", id="private-address"),
        pytest.param("0.0.0.0:{port}", id="unspecified"),
        pytest.param("[::ffff:127.0.0.1]:{port}", id="mapped-v6"),
        pytest.param("localhost:notaport", id="bad-port"),
        pytest.param("127.0.0.1:{port}@evil.example", id="userinfo-trick"),
        pytest.param("", id="empty"),
        pytest.param(None, id="missing"),
    ],
)
def test_admin_api_needs_a_loopback_host(sim: KlingSimulator, host: str | None) -> None:
    port = sim.base_url.rsplit(":", 1)[1]
    header = None if host is None else host.format(port=port)
    json_headers = {"Content-Type": "application/json"}
    # DNS rebinding: a page on evil.example, resolved to 127.0.0.1, reads and writes the admin API.
    for method, route, body in [
        ("GET", "stats", b""),
        ("GET", "submitted", b""),
        ("GET", "tasks", b""),
        ("GET", "config", b""),
        ("GET", "faults", b""),
        ("DELETE", "faults", b""),
        ("POST", "config", b'{"task_seconds": 99}'),
        ("POST", "reset", b"{}"),
    ]:
        status_code, payload = raw_request(
            sim, method, f"/_simulator/{route}", body=body, headers=json_headers, host=header
        )
        assert status_code == 403, (method, route, payload)
        assert set(payload) == {"error"}
    assert sim.task_seconds == 10.0


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LocalHost", "[::1]:{port}", "[::1]"]
)
def test_admin_api_answers_loopback_hosts(sim: KlingSimulator, host: str) -> None:
    port = sim.base_url.rsplit(":", 1)[1]
    status_code, payload = raw_request(sim, "GET", "/_simulator/config", host=host.format(port=port))
    assert (status_code, payload["task_seconds"]) == (200, 10.0)
    status_code, _ = raw_request(
        sim,
        "POST",
        "/_simulator/config",
        body=b'{"task_seconds": 3}',
        headers={"Content-Type": "application/json"},
        host=host.format(port=port),
    )
    assert status_code == 200
    assert sim.task_seconds == 3


def test_api_routes_do_not_check_the_host(sim: KlingSimulator) -> None:
    # The key guards the API itself; a proxy in front of it may rewrite the Host header.
    status_code, payload = raw_request(
        sim,
        "POST",
        SUBMIT_PATH,
        body=json.dumps(TEXT_TO_VIDEO).encode(),
        headers={"Authorization": sim.api_key, "Content-Type": "application/json"},
        host="proxy.example.com",
    )
    assert status_code == 200, payload


# --------------------------------------------------------------------------------------------------
# Capacity: max_active_tasks (the vendor's "task resources insufficient", 006001094)
# --------------------------------------------------------------------------------------------------


def assert_capacity_refusal(response: httpx.Response) -> None:
    # The same answer as a rate_limit fault with its defaults.
    error = assert_error_body(response, 429, VENDOR_CODE_RESOURCES_INSUFFICIENT)
    assert error["type"] == "rate_limit_error"
    assert "resources insufficient" in error["message"]
    assert response.headers["retry-after"] == "1"


def test_max_active_tasks_refuses_submits_beyond_capacity(sim: KlingSimulator, api: httpx.Client) -> None:
    assert sim.max_active_tasks is None
    sim.max_active_tasks = 2
    sim.fail_next_tasks(1)
    first = submit(api)
    submit(api, text_to_video(external_task_id="second"))
    sim.advance_time(3)  # both Running now: Running counts as much as Pending
    assert {task.status for task in sim.tasks} == {"Running"}
    refused = api.post(SUBMIT_PATH, json=text_to_video(external_task_id="third"))
    assert_capacity_refusal(refused)
    assert len(sim.submitted) == len(sim.tasks) == 2  # nothing created, nothing billed
    stats = sim.stats()
    assert (stats["capacity_refusals"], stats["active_tasks"], stats["active_tasks_peak"]) == (1, 2, 2)
    assert stats["faults_fired"] == {}

    sim.advance_time(7)  # both finished by the simulator's clock: room again
    assert sim.get_task(first).status == "Failure"
    third = submit(api, text_to_video(external_task_id="third"))  # the refused id was not taken
    assert sim.get_task(third).status == "Pending"
    stats = sim.stats()
    assert (stats["capacity_refusals"], stats["active_tasks"], stats["active_tasks_peak"]) == (1, 1, 2)
    assert stats["failures_pending"] == 0


def test_a_refused_submit_keeps_pending_failures(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.max_active_tasks = 1
    submit(api)
    sim.fail_next_tasks(1, message="for the next created task")
    assert_capacity_refusal(api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO))
    assert sim.stats()["failures_pending"] == 1


def test_max_active_tasks_checks_auth_and_body_first(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.max_active_tasks = 1
    submit(api)
    assert api.post(SUBMIT_PATH, json=TEXT_TO_VIDEO, headers={"Authorization": "wrong"}).status_code == 401
    assert api.post(SUBMIT_PATH, json={"model": "kling-v3-omni"}).status_code == 400
    assert sim.stats()["capacity_refusals"] == 0


def test_finished_tasks_do_not_count(sim: KlingSimulator, api: httpx.Client) -> None:
    sim.task_seconds = 0
    sim.max_active_tasks = 1
    for _ in range(3):
        submit(api)
    stats = sim.stats()
    assert (stats["capacity_refusals"], stats["active_tasks"], stats["active_tasks_peak"]) == (0, 0, 0)


def test_peak_is_tracked_without_a_limit(sim: KlingSimulator, api: httpx.Client) -> None:
    for _ in range(3):
        submit(api)
    sim.advance_time(10)
    submit(api)
    stats = sim.stats()
    assert (stats["active_tasks"], stats["active_tasks_peak"], stats["capacity_refusals"]) == (1, 3, 0)


def test_fifty_concurrent_submits_against_a_capacity_of_five(sim: KlingSimulator) -> None:
    sim.max_active_tasks = 5

    def one_submit(number: int) -> int:
        with client(base_url=sim.base_url, headers={"Authorization": sim.api_key}) as api:
            body = text_to_video(external_task_id=f"mapped-{number}")
            return api.post(SUBMIT_PATH, json=body).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(one_submit, range(50)))
    assert sorted(codes) == [200] * 5 + [429] * 45
    stats = sim.stats()
    assert (stats["tasks"], stats["submitted"], stats["capacity_refusals"]) == (5, 5, 45)
    assert stats["active_tasks_peak"] == 5


def test_max_active_tasks_setting(sim: KlingSimulator) -> None:
    with pytest.raises(KlingSimulatorError, match="max_active_tasks"):
        sim.max_active_tasks = 0
    with pytest.raises(KlingSimulatorError, match="max_active_tasks"):
        KlingSimulator(max_active_tasks=-1)
    with KlingSimulatorClient(sim.base_url) as admin:
        assert admin.configure(max_active_tasks=5)["max_active_tasks"] == 5
        assert sim.max_active_tasks == 5
        assert admin.stats()["settings"]["max_active_tasks"] == 5
        with pytest.raises(KlingSimulatorError, match=r"POST /_simulator/config was refused with 400: "):
            admin.configure(max_active_tasks=True)
        assert admin.configure(max_active_tasks=None)["max_active_tasks"] is None
    with KlingSimulator(max_active_tasks=3) as limited:
        limited.max_active_tasks = None
        limited.reset()
        assert limited.max_active_tasks == 3
        assert limited.stats()["capacity_refusals"] == 0


# -- faults for the fault matrix (issue 9): Retry-After as text, gzip and endless results ----------------


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2099 07:28:00 GMT", "soon, maybe"])
def test_rate_limit_retry_after_text_is_sent_as_is(value: str) -> None:
    with KlingSimulator() as sim:
        sim.inject_fault("status", "rate_limit", retry_after=value)
        response = httpx.get(f"{sim.base_url}/v1/tasks/status", params={"task_id": "x"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == value


def test_retry_after_text_must_be_printable_ascii() -> None:
    with KlingSimulator() as sim, pytest.raises(KlingSimulatorError, match="printable ASCII"):
        sim.inject_fault("status", "rate_limit", retry_after="a\r\nSet-Cookie: x")


def _finished_result_url(sim: KlingSimulator) -> str:
    sim.task_seconds = 0
    headers = {"Authorization": sim.api_key}
    body = {"model": "kling-v3-omni", "input": {"prompt": "p"}, "parameters": {"aspect_ratio": "1:1"}}
    task_id = httpx.post(f"{sim.base_url}/v1/tasks/submit", json=body, headers=headers).json()["output"][
        "task_id"
    ]
    status = httpx.get(f"{sim.base_url}/v1/tasks/status", params={"task_id": task_id}, headers=headers).json()
    return str(status["output"]["urls"][0])


def test_gzip_result_fault_sends_the_video_gzip_coded() -> None:
    with KlingSimulator() as sim:
        url = _finished_result_url(sim)
        sim.inject_fault("result", "gzip")
        with httpx.stream("GET", url) as response:
            coded = b"".join(response.iter_raw())
            assert response.headers["Content-Encoding"] == "gzip"
            assert int(response.headers["Content-Length"]) == len(coded)
    assert gzip.decompress(coded) == result_video("1:1")


def test_endless_result_fault_never_ends_until_the_client_leaves() -> None:
    with KlingSimulator() as sim:
        url = _finished_result_url(sim)
        sim.inject_fault("result", "endless", seconds=20)
        received = 0
        with httpx.stream("GET", url) as response:
            assert "Content-Length" not in response.headers
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > 8 * 1024 * 1024:
                    break
    assert received > 8 * 1024 * 1024
