"""
The services of the distributed topology: a PostgreSQL database of its own, and a Redis broker of its own.

:class:`PostgresDatabase` creates a uniquely named database on the machine's PostgreSQL server (127.0.0.1,
trust auth, user ``postgres``) and drops it again; nothing else on the server is touched.
:class:`RedisBroker` runs ``redis-server`` from the machine's binary on a free port of 127.0.0.1, without
any disk persistence, as a :class:`~stack_processes.ManagedProcess`: it is stopped (and started again on the
same port, empty) by its own pid, never through the machine's own Redis service.
:func:`missing_distributed_services` says why this topology cannot run here (``None`` when it can).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from stack_processes import HOST, HarnessError, ManagedProcess, free_port, stop_processes

if TYPE_CHECKING:
    from pathlib import Path

#: The machine's PostgreSQL server, as the project's machines run it (Debian's package, trust auth).
DEFAULT_POSTGRES_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Every database this harness creates starts with this (and ends with a random part).
DATABASE_PREFIX = "kling_airflow_"
_CONNECT_TIMEOUT_SECONDS = 5


def _connect(server_url: str):  # type: ignore[no-untyped-def]  # psycopg2 ships no types
    import psycopg2

    connection = psycopg2.connect(server_url, connect_timeout=_CONNECT_TIMEOUT_SECONDS)
    connection.autocommit = True
    return connection


def _execute(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on its own autocommit connection; return the rows it gave (none for DDL)."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
    finally:
        connection.close()


class PostgresDatabase:
    """
    A fresh PostgreSQL database for one Airflow deployment: made by :meth:`create`, gone after :meth:`drop`.

    :param server_url: a libpq URL of the server's maintenance database (the new database goes beside it).
    :param name: the database's name (default: :data:`DATABASE_PREFIX` plus time and random hex).
    """

    def __init__(self, server_url: str = DEFAULT_POSTGRES_SERVER_URL, *, name: str | None = None) -> None:
        self.server_url = server_url
        self.name = name or f"{DATABASE_PREFIX}{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(4)}"
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"database name {self.name!r}: letters, digits and '_' only")
        self.created = False

    def url(self, scheme: str = "postgresql") -> str:
        """Return the database's URL with another scheme (``postgresql+psycopg2``, ``db+postgresql``...).

        :param scheme: the URL scheme.
        """
        parts = urlsplit(self.server_url)
        return urlunsplit((scheme, parts.netloc, f"/{self.name}", parts.query, ""))

    @property
    def sqlalchemy_url(self) -> str:
        """``[database] sql_alchemy_conn`` of Airflow (psycopg2; Airflow derives its asyncpg twin)."""
        return self.url("postgresql+psycopg2")

    @property
    def celery_result_backend(self) -> str:
        """``[celery] result_backend``: Celery's database backend, in the same database."""
        return self.url("db+postgresql")

    def create(self) -> None:
        """Create the database (it must not exist)."""
        _execute(self.server_url, f'CREATE DATABASE "{self.name}"')
        self.created = True

    def drop(self) -> None:
        """Drop the database, closing its remaining sessions (``WITH (FORCE)``); no error if it is gone."""
        if not self.created:
            return
        _execute(self.server_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False

    def exists(self) -> bool:
        """Whether the database exists on the server."""
        return bool(_execute(self.server_url, "SELECT 1 FROM pg_database WHERE datname = %s", self.name))

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Run one read query in the database and return its rows.

        :param sql: the query, with ``%s`` placeholders.
        :param params: the values of the placeholders.
        """
        return _execute(self.url(), sql, *params)


class RedisBroker:
    """
    A ``redis-server`` of the harness's own on 127.0.0.1: no RDB snapshots, no AOF, nothing on disk.

    :param work_dir: its working directory (``dir``; nothing is written there) and log file's folder.
    :param port: the port (default: a free one); :meth:`start` after :meth:`stop` reuses it.
    :param binary: the ``redis-server`` executable.
    """

    def __init__(self, work_dir: Path, *, port: int | None = None, binary: str = "redis-server") -> None:
        self.work_dir = work_dir
        self.port = port or free_port()
        self.binary = binary
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The broker URL for Celery (database 0 of this server: nothing else uses it)."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def alive(self) -> bool:
        """Whether the server process runs."""
        return self.process is not None and self.process.alive

    def start(self, *, timeout: float = 20.0) -> None:
        """Start the server and wait (bounded) until it answers ``PING``.

        :param timeout: seconds.
        :raises HarnessError: when it exits or does not answer in time.
        """
        binary = shutil.which(self.binary)
        if binary is None:
            raise HarnessError(f"no {self.binary!r} executable on PATH")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [
            binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.work_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "redis-broker",
            argv,
            env=dict(os.environ),
            log_path=self.work_dir / "redis-broker.log",
            cwd=self.work_dir,
        )
        self.process.start()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.process.alive:
                raise HarnessError(f"redis-server exited:\n{self.process.log_tail(2000)}")
            if time.monotonic() >= deadline:
                raise HarnessError(f"redis-server on port {self.port} did not answer within {timeout:g} s")
            time.sleep(0.1)

    def ping(self) -> bool:
        """Whether the server answers ``PING`` now."""
        import redis

        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop the server by its pid (``SIGTERM``, then ``SIGKILL``); whatever it held is gone.

        :param grace_seconds: seconds between the two signals.
        """
        if self.process is not None:
            stop_processes([self.process], grace_seconds=grace_seconds)

    def kill(self) -> None:
        """``SIGKILL`` the server by its pid (a crash) and wait until it is gone."""
        if self.process is not None and self.process.popen is not None:
            self.process.signal_group(signal.SIGKILL)
            self.process.popen.wait(timeout=10.0)


def missing_distributed_services(server_url: str = DEFAULT_POSTGRES_SERVER_URL) -> str | None:
    """
    Say why the distributed topology cannot run on this machine, or return ``None`` when it can.

    It needs the PostgreSQL server to answer (and allow ``CREATE DATABASE``) and a ``redis-server``
    executable (the harness runs a broker of its own; the machine's Redis service is not used).

    :param server_url: the PostgreSQL server's maintenance database URL.
    """
    reasons = []
    try:
        connection = _connect(server_url)
    except ImportError:
        reasons.append("psycopg2 is not installed (make setup installs it from the lock)")
    except Exception as error:  # any connection failure: the reason is what matters
        where = urlsplit(server_url)
        reasons.append(
            f"PostgreSQL at {where.hostname}:{where.port or 5432} does not answer ({type(error).__name__})"
        )
    else:
        connection.close()
    if shutil.which("redis-server") is None:
        reasons.append("no redis-server executable on PATH (Debian: apt-get install redis-server)")
    return "; ".join(reasons) or None
