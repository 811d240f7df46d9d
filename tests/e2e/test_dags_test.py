"""
Every example DAG runs green under ``airflow dags test`` against the local simulator and S3 server.

Each run is a real ``airflow dags test <dag_id>`` process (its own ``AIRFLOW_HOME``, connections from
``AIRFLOW_CONN_*``): it submits to the simulator, waits (deferral runs the trigger inline under
``dags test``), streams the results into the local SeaweedFS bucket; the test then compares the objects'
bytes with the simulator's video files and the submitted bodies with what the example asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from airflow_provider_kling.testing.simulator import result_video

from .conftest import CATALOG, TEXT_TO_VIDEO

if TYPE_CHECKING:
    from backends import Backends

    from .conftest import DagsTestResult, DagsTestRunner

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Expected:
    """What one example must leave behind."""

    dag_id: str
    submits: int
    prefix: str
    aspect_ratio: str


VIDEO_EXAMPLES = [
    Expected(TEXT_TO_VIDEO, 1, "kling/text-to-video/", "16:9"),
    Expected("example_kling_batch", 3, "kling/example_kling_batch/", "9:16"),
    Expected("example_kling_image_to_video", 1, "kling/image-to-video/", "16:9"),
    Expected("example_kling_video_edit", 1, "kling/video-edit/", "16:9"),
    Expected("example_kling_multi_shot", 1, "kling/multi-shot/", "16:9"),
]


def _green(result: DagsTestResult) -> None:
    assert result.returncode == 0, f"airflow dags test {result.dag_id} failed:\n{result.output[-6000:]}"
    assert "state=success" in result.output or "DagRun Finished" in result.output, result.output[-3000:]


def _key(uri: str, bucket: str) -> str:
    return uri.removeprefix(f"s3://{bucket}/")


@pytest.mark.parametrize("expected", VIDEO_EXAMPLES, ids=[e.dag_id for e in VIDEO_EXAMPLES])
def test_example_runs_green_and_lands_the_simulators_videos(
    expected: Expected, dags_test_runner: DagsTestRunner, e2e_backends: Backends
) -> None:
    result = dags_test_runner.run(expected.dag_id)

    _green(result)
    assert len(result.submitted) == expected.submits, "one billed Kling task per video, never more"
    bucket = e2e_backends.bucket
    landed = {
        uri: size for uri, size in result.new_objects.items() if uri.startswith(f"s3://{bucket}/kling/")
    }
    assert len(landed) == expected.submits
    video = result_video(expected.aspect_ratio)
    for uri, size in landed.items():
        assert _key(uri, bucket).startswith(expected.prefix), uri
        assert size == len(video)
        body = e2e_backends.s3.get_object(Bucket=bucket, Key=_key(uri, bucket))["Body"].read()
        assert body == video, f"{uri} is not the simulator's {expected.aspect_ratio} video"


def test_batch_renders_one_video_per_prompt_of_the_s3_file(dags_test_runner: DagsTestRunner) -> None:
    from backends import EXAMPLE_PROMPTS

    result = dags_test_runner.run("example_kling_batch")

    _green(result)
    assert sorted(body["input"]["prompt"] for body in result.submitted) == sorted(EXAMPLE_PROMPTS)
    assert {body["parameters"]["aspect_ratio"] for body in result.submitted} == {"9:16"}


def test_image_to_video_sends_the_s3_frames_as_fetchable_inputs_R18(dags_test_runner: DagsTestRunner) -> None:
    result = dags_test_runner.run("example_kling_image_to_video")

    _green(result)
    (body,) = result.submitted
    images = body["parameters"]["image_list"]
    assert [image["type"] for image in images] == ["first_frame", "end_frame"]
    assert all(not image["image_url"].startswith("s3://") for image in images)


def test_video_edit_sends_a_presigned_https_url_without_aspect_ratio_R4_R21(
    dags_test_runner: DagsTestRunner,
) -> None:
    result = dags_test_runner.run("example_kling_video_edit")

    _green(result)
    (body,) = result.submitted
    (video,) = body["parameters"]["video_list"]
    assert video["refer_type"] == "base"
    assert video["video_url"].startswith(("http://", "https://"))
    assert "source_video.mp4" in video["video_url"]
    assert "aspect_ratio" not in body["parameters"]


def test_multi_shot_sends_the_three_shots_R8_R11(dags_test_runner: DagsTestRunner) -> None:
    result = dags_test_runner.run("example_kling_multi_shot")

    _green(result)
    (body,) = result.submitted
    parameters = body["parameters"]
    assert parameters["multi_shot"] is True
    assert [shot["duration"] for shot in parameters["multi_prompt"]] == ["3", "2", "3"]
    assert sum(int(shot["duration"]) for shot in parameters["multi_prompt"]) == parameters["duration"]


def test_catalog_lists_the_videos_of_the_alias_events(
    dags_test_runner: DagsTestRunner, e2e_backends: Backends
) -> None:
    landed = dags_test_runner.run(TEXT_TO_VIDEO)
    _green(landed)
    video_uri = next(uri for uri in landed.new_objects if "/kling/text-to-video/" in uri)

    result = dags_test_runner.run(CATALOG)

    _green(result)
    assert result.submitted == [], "the catalog never calls the Kling API"
    (catalog_uri,) = result.new_objects
    bucket = e2e_backends.bucket
    assert _key(catalog_uri, bucket).startswith("kling-catalog/")
    entries = json.loads(
        e2e_backends.s3.get_object(Bucket=bucket, Key=_key(catalog_uri, bucket))["Body"].read()
    )
    by_uri = {entry["uri"]: entry for entry in entries}
    assert video_uri in by_uri, f"the catalog misses {video_uri}: {entries}"
    assert by_uri[video_uri]["size_bytes"] == landed.new_objects[video_uri]
    assert by_uri[video_uri]["kling_task_id"]
