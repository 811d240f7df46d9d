"""The ``kling-local-s3`` command: serves a bucket, prints a working Airflow connection, stops cleanly."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from airflow_provider_kling.testing.s3 import WEED_BINARY_ENV
from airflow_provider_kling.testing.s3_cli import ENDPOINT_VARIABLE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The console script `make setup` installs next to the interpreter.
COMMAND = Path(sys.executable).parent / "kling-local-s3"


def _line_reader(stream: IO[str]) -> queue.Queue[str]:
    """Return a queue fed with the stream's lines by a daemon thread (so reads can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` (id -> command name), read from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        if parent == pid:
            found[int(stat.parent.name)] = name
    return found


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_console_script_is_installed() -> None:
    assert COMMAND.is_file(), "run `make setup` to install the kling-local-s3 console script"


def test_it_serves_a_bucket_prints_a_working_connection_and_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = subprocess.Popen(
        [str(COMMAND), "--bucket", "cli-bucket"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = _line_reader(process.stdout)
        endpoint_line = lines.get(timeout=60)
        connection_line = lines.get(timeout=10)

        name, _, endpoint_url = endpoint_line.strip().partition("=")
        assert name == ENDPOINT_VARIABLE
        assert endpoint_url.startswith("http://127.0.0.1:")
        variable, _, quoted = connection_line.strip().partition("=")
        assert variable == "AIRFLOW_CONN_AWS_DEFAULT"
        [value] = shlex.split(quoted)  # what `export` in a shell would set

        # Airflow reads the exported variable as the aws_default connection.
        from airflow.sdk import BaseHook

        monkeypatch.setenv(variable, value)
        connection = BaseHook.get_connection("aws_default")
        assert connection.conn_type == "aws"
        extra = connection.extra_dejson
        assert extra["endpoint_url"] == endpoint_url

        client = boto3.client(
            "s3",
            endpoint_url=extra["endpoint_url"],
            aws_access_key_id=connection.login,
            aws_secret_access_key=connection.password,
            region_name=extra["region_name"],
            config=Config(signature_version="s3v4"),
        )
        try:
            client.put_object(Bucket="cli-bucket", Key="hello.txt", Body=b"from kling-local-s3")
            body = client.get_object(Bucket="cli-bucket", Key="hello.txt")["Body"].read()
            assert body == b"from kling-local-s3"
        finally:
            client.close()

        seaweedfs = [pid for pid, command in _children(process.pid).items() if command == "weed"]
        assert len(seaweedfs) == 1, _children(process.pid)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert _gone(seaweedfs[0], timeout=10), "SeaweedFS outlived kling-local-s3"
        port = urlsplit(endpoint_url).port
        assert port is not None
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
            pass
        assert process.stderr is not None
        assert "Local S3 server stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_server_that_cannot_start_is_exit_status_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(COMMAND), "--bucket", "cli-bucket"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, WEED_BINARY_ENV: str(tmp_path / "no-weed")},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "not an executable file" in result.stderr


def test_the_bucket_is_required() -> None:
    result = subprocess.run([str(COMMAND)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--bucket" in result.stderr
