"""
Benchmark: copy Kling result videos into S3 three ways, and compare throughput and peak memory.

* ``kling``: :class:`KlingToS3Operator` (streams the download into a multipart upload);
* ``http_to_s3``: the amazon provider's ``HttpToS3Operator`` doing the same copy (it reads the whole body
  into memory first);
* ``boto3_upload_file``: raw boto3 ``upload_file`` of the same bytes from local disk (no download at all):
  the ceiling the others are measured against.

Everything runs on this machine: the local simulator serves the result video (``result_size_bytes``: a
real MP4 padded to the size), the local SeaweedFS server (``LocalS3Server``) stores it. Each copy runs in a
fresh Python process, so its memory is its own: "baseline" is the process's RSS right before the copy
(after imports and hook setup), "peak" is its high-water mark (``VmHWM``) after it. Throughput is the size
divided by the copy's wall time (imports and setup excluded). Every landed object's size is checked, and
for sizes up to 256 MiB its SHA-256 against the source file.

Run as a plain script (not a test)::

    .venv/bin/python benchmarks/bench_s3_transfer.py                      # 10 MiB, 200 MiB, 2 GiB
    .venv/bin/python benchmarks/bench_s3_transfer.py --sizes 10M 200M     # skip the 2 GiB case

It prints a Markdown table (paste it into ``benchmarks/RESULTS.md``) and the machine's facts.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _machine, also when loaded by path
from _machine import print_machine

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
METHODS = ("kling", "http_to_s3", "boto3_upload_file")
BUCKET = "bench"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10M, 2G)")
    return int(match.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[match.group(2)]


def human(size: int) -> str:
    return f"{size // (1024 * MiB)} GiB" if size % (1024 * MiB) == 0 else f"{size / MiB:g} MiB"


def _memory() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


# --- the child: one copy, in a fresh process -----------------------------------------------------------


def child(method: str, args: dict[str, Any]) -> dict[str, Any]:
    key = args["key"]
    if method == "kling":
        from airflow.sdk.execution_time.context import OutletEventAccessors

        from airflow_provider_kling.transfers.kling_to_s3 import KlingToS3Operator

        operator = KlingToS3Operator(
            task_id="copy",
            kling_task_id=args["kling_task_id"],
            s3_bucket=BUCKET,
            s3_key=key,
            max_download_bytes=8 * 1024 * MiB,  # the 2 GiB case is past the default 1 GiB cap
        )
        operator.uploader.s3.list_buckets()  # connect before measuring, as the others do
        operator.kling_hook.get_conn()
        context: Any = {"outlet_events": OutletEventAccessors()}

        def copy() -> None:
            operator.execute(context)

    elif method == "http_to_s3":
        from airflow.providers.amazon.aws.transfers.http_to_s3 import HttpToS3Operator

        operator_a = HttpToS3Operator(
            task_id="copy",
            http_conn_id="bench_http",
            endpoint=args["endpoint"],
            method="GET",
            s3_bucket=BUCKET,
            s3_key=key,
            aws_conn_id="aws_default",
        )
        # S3Hook is AwsBaseHook[boto3.client], a function rather than a type: mypy cannot see the client.
        cast("S3Client", operator_a.s3_hook.get_conn()).list_buckets()
        _ = operator_a.http_hook

        def copy() -> None:
            operator_a.execute({})

    else:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=args["endpoint_url"],
            aws_access_key_id=args["access_key"],
            aws_secret_access_key=args["secret_key"],
            region_name="us-east-1",
        )
        client.list_buckets()

        def copy() -> None:
            client.upload_file(args["local_file"], BUCKET, key)

    if method != "boto3_upload_file":
        # Both operators report to Airflow's hook-level lineage, whose first use loads the plugins (about
        # 0.5 s here): a task process has done that before its operator runs, so do it before measuring.
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        get_hook_lineage_collector()
    baseline, _ = _memory()
    started = time.perf_counter()
    copy()
    elapsed = time.perf_counter() - started
    _, peak = _memory()
    return {"seconds": elapsed, "baseline_mib": baseline, "peak_mib": peak}


# --- the parent: servers, source file, one child per (size, method) ------------------------------------


def machine_facts(local_s3: Any) -> dict[str, str]:
    """This benchmark's facts beside the common ones (``_machine.py``): its libraries and the disk."""
    weed = subprocess.run(
        [str(local_s3._weed_binary or "weed"), "version"], capture_output=True, text=True, check=False
    )
    disk = subprocess.run(["df", "-h", tempfile.gettempdir()], capture_output=True, text=True, check=False)
    return {
        "boto3": version("boto3"),
        "httpx": version("httpx"),
        "seaweedfs": weed.stdout.strip() or weed.stderr.strip(),
        "disk": disk.stdout.strip().splitlines()[-1] if disk.stdout else "unknown",
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run(sizes: list[int], methods: list[str], rounds: int) -> None:
    import httpx

    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingVideoRequest
    from airflow_provider_kling.testing import KlingSimulator
    from airflow_provider_kling.testing.s3 import LocalS3Server, find_weed_binary

    workdir = Path(tempfile.mkdtemp(prefix="kling-bench-"))
    rows = []
    with (
        LocalS3Server(buckets=[BUCKET], weed_binary=find_weed_binary()) as local_s3,
        KlingSimulator(task_seconds=0.1) as simulator,
    ):
        print(f"SeaweedFS started in {local_s3.startup_seconds:.1f} s", flush=True)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_AWS_DEFAULT": local_s3.airflow_connection_json(),
            "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(
                {"conn_type": "kling", "host": simulator.base_url, "password": simulator.api_key}
            ),
            "AIRFLOW_CONN_BENCH_HTTP": json.dumps({"conn_type": "http", "host": simulator.base_url}),
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
        s3 = local_s3.client()
        # Warm the fresh server up (its first write into a bucket grows a volume, about 0.3 s and more):
        # whichever method ran first would otherwise pay for it.
        s3.put_object(Bucket=BUCKET, Key="warm-up/small", Body=bytes(MiB))
        s3.upload_fileobj(io.BytesIO(bytes(24 * MiB)), BUCKET, "warm-up/multipart")
        s3.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": "warm-up/small"}, {"Key": "warm-up/multipart"}]}
        )
        for size in sizes:
            simulator.result_size_bytes = size
            with KlingHook() as hook:
                task_id = hook.submit_task(KlingVideoRequest.build(prompt="benchmark", aspect_ratio="16:9"))
                time.sleep(0.3)
                (url,) = hook.get_task(task_id).urls
            local_file = workdir / "source.mp4"
            with httpx.stream("GET", url, timeout=600) as response, local_file.open("wb") as handle:
                for chunk in response.iter_bytes(MiB):
                    handle.write(chunk)
            expected = sha256_of(local_file) if size <= 256 * MiB else None
            # Each round rotates the order, so no method always runs first (or right after a deletion).
            schedule = [
                (number, method)
                for number in range(1, rounds + 1)
                for method in methods[(number - 1) % len(methods) :] + methods[: (number - 1) % len(methods)]
            ]
            landed_keys = []
            for round_number, method in schedule:
                key = f"{method}/{size}-{round_number}.mp4"
                args = {
                    "key": key,
                    "kling_task_id": task_id,
                    "endpoint": url.removeprefix(simulator.base_url),
                    "local_file": str(local_file),
                    "endpoint_url": local_s3.endpoint_url,
                    "access_key": local_s3.access_key,
                    "secret_key": local_s3.secret_key,
                }
                done = subprocess.run(
                    [sys.executable, __file__, "--child", method, json.dumps(args)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=3600,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{method} failed at {human(size)}:\n{done.stderr[-4000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                head = s3.head_object(Bucket=BUCKET, Key=key)
                assert head["ContentLength"] == size, (method, head["ContentLength"], size)
                if expected is not None:
                    landed = workdir / "landed.mp4"
                    s3.download_file(BUCKET, key, str(landed))
                    assert sha256_of(landed) == expected, f"{method}: content differs"
                    landed.unlink()
                landed_keys.append(key)
                row = {
                    "size": size,
                    "method": method,
                    "round": round_number,
                    "mib_per_s": size / MiB / result["seconds"],
                    "load": os.getloadavg()[0],
                    **result,
                }
                rows.append(row)
                print(
                    f"{human(size):>8} #{round_number} {method:<18} {row['mib_per_s']:7.1f} MiB/s  "
                    f"{result['seconds']:7.2f} s  load {row['load']:.1f}  "
                    f"baseline {result['baseline_mib']:6.0f} MiB  peak {result['peak_mib']:6.0f} MiB  "
                    f"(+{result['peak_mib'] - result['baseline_mib']:.0f})",
                    flush=True,
                )
            local_file.unlink()
            for key in landed_keys:  # deleted once the size is done: no server clean-up during a copy
                s3.delete_object(Bucket=BUCKET, Key=key)
        facts = machine_facts(local_s3)
    shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, facts)


def print_table(rows: list[dict[str, Any]], facts: dict[str, str]) -> None:
    """One line per (size, method): the median throughput over the rounds, the largest memory figures."""
    summary: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault((row["size"], row["method"]), {"speeds": [], "baseline": 0.0, "peak": 0.0})
        entry["speeds"].append(row["mib_per_s"])
        entry["baseline"] = max(entry["baseline"], row["baseline_mib"])
        entry["peak"] = max(entry["peak"], row["peak_mib"])
        entry["delta"] = max(entry.get("delta", 0.0), row["peak_mib"] - row["baseline_mib"])
    for entry in summary.values():
        entry["median"] = statistics.median(entry["speeds"])
    print(
        "\n| size | method | median MiB/s (rounds) | vs boto3 upload_file | baseline RSS (MiB) "
        "| peak RSS (MiB) | peak - baseline (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (size, method), entry in summary.items():
        ceiling = summary.get((size, "boto3_upload_file"))
        ratio = f"{entry['median'] / ceiling['median']:.0%}" if ceiling else "n/a"
        speeds = ", ".join(f"{speed:.0f}" for speed in entry["speeds"])
        print(
            f"| {human(size)} | {method} | {entry['median']:.1f} ({speeds}) | {ratio} "
            f"| {entry['baseline']:.0f} | {entry['peak']:.0f} | {entry['delta']:.0f} |"
        )
    print_machine(facts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[10 * MiB, 200 * MiB, 2048 * MiB])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--rounds", type=int, default=3, help="runs of every method per size, interleaved")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "ARGS_JSON"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        method, raw = options.child
        print(json.dumps(child(method, json.loads(raw))))
        return
    run(options.sizes, options.methods, options.rounds)


if __name__ == "__main__":
    main()
