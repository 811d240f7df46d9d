"""
``scripts/demo.py`` and its backends: the local and the real-API variants are wired as documented, and the
API key never reaches the console. (The demo's Airflow path is the harness the real-Airflow tests run.)
"""

from __future__ import annotations

import json

import demo
import pytest
from backends import DEFAULT_BUCKET, REAL_API_HELP, backends_from_env

pytestmark = pytest.mark.e2e

REAL_KEY = "mv-real-key-must-never-be-printed-0123"


def test_real_api_with_only_a_key_uses_the_local_bucket_and_never_prints_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []

    with backends_from_env({"KLING_API_KEY": REAL_KEY}, echo=lines.append) as backends:
        assert backends.uses_real_api
        assert backends.kling_connection == {"conn_type": "kling", "password": REAL_KEY}
        assert backends.bucket == DEFAULT_BUCKET
        assert backends.s3_server is not None
        assert backends.s3.head_bucket(Bucket=DEFAULT_BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200
        settings = demo.demo_settings(demo.parse_args(["--exit"]), backends)

    assert settings.extra_env["KLING_EXAMPLE_POLL_SECONDS"] == "15", "polls the real API gently"
    assert json.loads(json.dumps(dict(settings.connections)))["kling_default"]["password"] == REAL_KEY
    printed = "\n".join(lines) + capsys.readouterr().out
    assert "billed" in printed
    assert REAL_KEY not in printed
    assert REAL_KEY not in backends.description


def test_real_api_and_bucket_use_the_default_aws_credential_chain() -> None:
    env = {
        "KLING_API_KEY": REAL_KEY,
        "KLING_BASE_URL": "https://proxy.example.internal",
        "KLING_S3_BUCKET": "team-videos",
        "KLING_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }

    with backends_from_env(env) as backends:
        assert backends.s3_server is None
        assert backends.bucket == "team-videos"
        assert backends.variables == {"kling_video_bucket": "team-videos"}
        assert backends.kling_connection["host"] == "https://proxy.example.internal"
        assert backends.aws_connection == {
            "conn_type": "aws",
            "extra": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},
        }, "no credentials in the connection: boto3's chain applies in Airflow's processes"


def test_local_variant_points_the_connections_at_the_simulator_and_seeds_the_inputs() -> None:
    with backends_from_env({}, task_seconds=1.0) as backends:
        assert backends.simulator is not None
        assert not backends.uses_real_api
        assert backends.kling_connection["host"] == backends.simulator.base_url
        keys = [item["Key"] for item in backends.s3.list_objects_v2(Bucket=DEFAULT_BUCKET)["Contents"]]
        settings = demo.demo_settings(demo.parse_args([]), backends)

    assert sorted(keys) == [
        "kling-inputs/character.png",
        "kling-inputs/end_frame.png",
        "kling-inputs/first_frame.png",
        "kling-inputs/prompts.json",
        "kling-inputs/source_video.mp4",
    ]
    assert settings.extra_env["KLING_EXAMPLE_POLL_SECONDS"] == "2"
    assert settings.pools == {"kling": (2, True, "Concurrent Kling video tasks")}
    assert settings.home == demo.DEFAULT_HOME
    assert str(settings.home).endswith(".demo/airflow"), "git-ignored"


def test_demo_help_documents_the_real_api_variant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.parse_args(["--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--exit" in out
    assert REAL_API_HELP.splitlines()[0] in out
