"""
``make demo``: generate a video with Kling from a real Airflow, end to end, on this machine.

It starts the local ModelVerse simulator and a local S3 server (or uses the real API, see ``--help``),
starts a real Airflow 3 (scheduler, DAG processor, triggerer, API server) with its own ``AIRFLOW_HOME`` in
``.demo/airflow``, triggers ``example_kling_text_to_video`` (submit >> wait in the triggerer >> copy to
S3), waits until the run succeeds, prints the ``s3://`` objects it produced with their sizes and the UI's
address, then keeps everything running until ``Ctrl-C`` (or stops at once with ``--exit``). ``Ctrl-C`` or
``SIGTERM`` stop every process it started.

``--celery`` runs the same on the distributed topology (a fresh PostgreSQL database, the CeleryExecutor with
a Redis broker of its own, two Celery workers, two triggerers; ``docs/deployment.md``) where PostgreSQL and
``redis-server`` exist on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from airflow_stack import (
    REPO_ROOT,
    AirflowStack,
    DistributedTopology,
    HarnessError,
    StackSettings,
    handle_termination,
)
from backends import INPUTS_PREFIX, KLING_POOL, REAL_API_HELP, Backends, backends_from_env, list_objects
from stack_services import missing_distributed_services

DEMO_DAG = "example_kling_text_to_video"
DOWNSTREAM_DAG = "example_kling_video_catalog"
DEFAULT_HOME = REPO_ROOT / ".demo" / "airflow"


def say(line: str) -> None:
    """Print one progress line of the demo."""
    print(f"[demo] {line}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line.

    :param argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0] if __doc__ else None,
        epilog=REAL_API_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--exit", action="store_true", help="stop everything once the run has succeeded")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="AIRFLOW_HOME (wiped at start)")
    parser.add_argument("--dag", default=DEMO_DAG, help="the example DAG to run (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the run may take")
    parser.add_argument("--parallelism", type=int, default=4, help="[core] parallelism (worker processes)")
    parser.add_argument("--task-seconds", type=float, default=8.0, help="simulated video time, seconds")
    parser.add_argument(
        "--celery",
        action="store_true",
        help="run distributed: a fresh PostgreSQL database (127.0.0.1:5432), the CeleryExecutor with a Redis "
        "broker of its own (redis-server), two Celery workers and two triggerers (docs/deployment.md)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=None, help="status query interval (default 2 local, 15 real)"
    )
    return parser.parse_args(argv)


def demo_settings(args: argparse.Namespace, backends: Backends) -> StackSettings:
    """Return the Airflow settings of the demo.

    :param args: the parsed command line.
    :param backends: what the examples talk to.
    """
    poll = args.poll_seconds or (15.0 if backends.uses_real_api else 2.0)
    name, slots, include_deferred, description = KLING_POOL
    return StackSettings(
        home=args.home,
        connections=backends.connections(),
        variables=backends.variables,
        pools={name: (slots, include_deferred, description)},
        parallelism=args.parallelism,
        # Airflow 3.3 loads providers' plugins (the Kling view) only when providers are discovered eagerly.
        extra_env={
            "KLING_EXAMPLE_POLL_SECONDS": f"{poll:g}",
            "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        },
        topology=DistributedTopology() if args.celery else None,
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; return the exit code.

    :param args: the parsed command line.
    """
    started = time.monotonic()
    with backends_from_env(task_seconds=args.task_seconds, echo=say) as backends:
        stack = AirflowStack(demo_settings(args, backends), echo=say)
        with stack:
            stack.wait_for_dag(DOWNSTREAM_DAG)
            stack.api.set_paused(DOWNSTREAM_DAG, paused=False)
            say(f"Unpaused {DOWNSTREAM_DAG}: it runs on the Asset events of every landed video")
            run_id = stack.trigger(args.dag, run_id=f"demo__{time.strftime('%Y-%m-%dT%H-%M-%S')}")
            outcome = stack.wait_for_run(args.dag, run_id, timeout=args.timeout)
            run_url = f"{stack.api_url}/dags/{args.dag}/runs/{run_id}"
            if outcome.state != "success":
                say(f"The run {run_id} ended {outcome.state}: see {run_url}")
                say(f"Component logs: {stack.component_log_dir}")
                return 1
            say(f"Run {run_id} succeeded in {outcome.seconds:.0f} s")
            _wait_for_downstream(stack)
            objects = [
                item for item in list_objects(backends.s3, backends.bucket) if INPUTS_PREFIX not in item[0]
            ]
            say(f"Objects in s3://{backends.bucket}/ (inputs under {INPUTS_PREFIX} not shown):")
            for uri, size in objects:
                print(f"    {uri}  {size:,} bytes", flush=True)
            say(f"Done in {time.monotonic() - started:.0f} s. The Airflow UI: {stack.api_url}/ ")
            say(f"This run: {run_url}")
            say(f"The Kling view (Browse > Kling videos): {stack.api_url}/plugin/kling-videos")
            if args.exit:
                return 0
            say("Airflow keeps running for you to explore; press Ctrl-C to stop everything.")
            while all(process.alive for process in stack.processes):
                time.sleep(1.0)
            say("An Airflow component exited: stopping everything")
            return 1


def _wait_for_downstream(stack: AirflowStack, timeout: float = 120.0) -> None:
    """Wait (bounded) for the first run of the Asset-scheduled DAG, so that its output is listed too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.api.dag_runs(DOWNSTREAM_DAG)
        if runs and runs[0]["state"] in ("success", "failed"):
            say(f"{DOWNSTREAM_DAG} ran on the new videos' Asset events: {runs[0]['state']}")
            return
        time.sleep(1.0)
    say(f"{DOWNSTREAM_DAG} has not finished yet: see it in the UI")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make demo``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.celery and (missing := missing_distributed_services()):
        say(f"--celery needs PostgreSQL and redis-server on this machine: {missing}")
        return 1
    mode = "the real ModelVerse API" if os.environ.get("KLING_API_KEY") else "the local simulator"
    say(f"Kling provider demo: a real Airflow on 127.0.0.1 runs {args.dag} against {mode}")
    try:
        with handle_termination():
            return run_demo(args)
    except KeyboardInterrupt:
        say("Interrupted: everything the demo started has been stopped.")
        return 130
    except HarnessError as error:
        say(f"Failed: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
