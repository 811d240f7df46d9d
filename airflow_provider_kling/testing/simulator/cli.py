"""The ``kling-simulator`` command: :func:`main` serves a :class:`KlingSimulator` until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, Final

from airflow_provider_kling.testing.simulator.control import (
    DEFAULT_API_KEY,
    DEFAULT_RESULT_TTL_SECONDS,
    KlingSimulator,
)
from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

log = logging.getLogger(__name__)

#: The port ``kling-simulator`` listens on by default.
DEFAULT_CLI_PORT: Final = 8089


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run ``kling-simulator``: print the base URL, then serve until Ctrl-C or SIGTERM.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="kling-simulator",
        description="A local stand-in for the ModelVerse task API (Kling V3 Omni), for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_CLI_PORT, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help="the key the API accepts (default: sim-key)"
    )
    parser.add_argument(
        "--task-seconds", type=float, default=5.0, help="task duration (default: %(default)s)"
    )
    parser.add_argument("--results-per-task", type=int, default=1, help="result URLs per task (default: 1)")
    parser.add_argument(
        "--result-ttl-seconds",
        type=float,
        default=DEFAULT_RESULT_TTL_SECONDS,
        help="result URL lifetime (default: %(default)s)",
    )
    parser.add_argument("--result-size-bytes", type=int, default=None, help="pad results to this size")
    parser.add_argument(
        "--max-active-tasks",
        type=int,
        default=None,
        help="refuse submits (429, 006001094) while this many tasks are active (default: no limit)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not _is_loopback(args.host):
        log.warning("Binding %s: the /_simulator/ admin API has no authentication", args.host)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        simulator = KlingSimulator(
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            task_seconds=args.task_seconds,
            results_per_task=args.results_per_task,
            result_ttl_seconds=args.result_ttl_seconds,
            result_size_bytes=args.result_size_bytes,
            max_active_tasks=args.max_active_tasks,
        )
    except KlingSimulatorError as error:
        parser.error(str(error))
    with simulator:
        print(simulator.base_url, flush=True)
        log.info("Serving %s; stop with Ctrl-C", simulator)
        while not stop.wait(0.5):
            pass
    return 0
