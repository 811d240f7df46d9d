"""
What the example DAGs talk to: the local ModelVerse simulator and S3 server, or the real API and bucket.

:func:`local_backends` starts :class:`~airflow_provider_kling.testing.KlingSimulator` (in this process, on
127.0.0.1) and :class:`~airflow_provider_kling.testing.s3.LocalS3Server` (SeaweedFS, its own process group),
creates the bucket and uploads the inputs the examples read (:func:`seed_example_inputs`).
:func:`real_backends_from_env` builds the same connections for the real API and a real bucket from
environment variables (:data:`REAL_API_HELP` lists them). Either way the result is a :class:`Backends`: the
Airflow connections (as ``AIRFLOW_CONN_*`` JSON objects), the Airflow variables the examples read, and a
boto3 client of the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing import KlingSimulator
    from airflow_provider_kling.testing.s3 import LocalS3Server

Echo = Callable[[str], None]

#: The bucket of the local demo (and the examples' default, Airflow variable ``kling_video_bucket``).
DEFAULT_BUCKET = "kling-videos"
#: Where the examples read their inputs from, inside the bucket.
INPUTS_PREFIX = "kling-inputs/"
#: The prompts the batch example generates one video for each (``kling-inputs/prompts.json``).
EXAMPLE_PROMPTS = (
    "A paper boat drifting down a rain-soaked street at dusk, cinematic, shallow depth of field",
    "Time-lapse of clouds rolling over a mountain ridge, golden hour light",
    "A hummingbird hovering at a red flower, slow motion, macro lens",
)
#: The pool the examples run their Kling tasks in: it caps how many videos render at once. Deferred tasks
#: must count, or a waiting sensor would not hold its slot. The docs show this exact command; the e2e
#: tests run it.
KLING_POOL = ("kling", 2, True, "Concurrent Kling video tasks")
KLING_POOL_CLI = ("pools", "set", "kling", "2", "Concurrent Kling video tasks", "--include-deferred")
#: The key of the simulator (a test value, not a secret).
SIMULATOR_API_KEY = "sim-key"

REAL_API_HELP = """\
Real API: set KLING_API_KEY (your ModelVerse key; KLING_BASE_URL to use another endpoint). With only the
key the videos still land in the local S3 server; to land them in your own bucket also set KLING_S3_BUCKET
(credentials from the usual AWS variables or profile; KLING_S3_ENDPOINT_URL for an S3-compatible store,
AWS_DEFAULT_REGION for the region). Every real task is billed: the demo submits one 5 s video."""


@dataclass
class Backends:
    """
    The endpoints of one demo or test session.

    :param kling_connection: the ``kling_default`` connection, a JSON object for ``AIRFLOW_CONN_*``.
    :param aws_connection: the ``aws_default`` connection, a JSON object for ``AIRFLOW_CONN_*``.
    :param bucket: the bucket the examples write to.
    :param s3: a boto3 client of that bucket's store.
    :param variables: Airflow variables the examples read.
    :param simulator: the local simulator (``None`` with the real API).
    :param s3_server: the local S3 server (``None`` with a real bucket).
    :param description: one line saying what runs where (no secret in it).
    """

    kling_connection: dict[str, Any]
    aws_connection: dict[str, Any]
    bucket: str
    s3: S3Client
    variables: dict[str, str] = field(default_factory=dict)
    simulator: KlingSimulator | None = None
    s3_server: LocalS3Server | None = None
    description: str = ""

    @property
    def uses_real_api(self) -> bool:
        """Whether tasks go to the real ModelVerse API (and are billed)."""
        return self.simulator is None

    def connections(self) -> dict[str, dict[str, Any]]:
        """Return the connections by id, for :class:`airflow_stack.StackSettings`."""
        return {"kling_default": self.kling_connection, "aws_default": self.aws_connection}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def make_png(
    width: int, height: int, rgb: tuple[int, int, int], *, stripe: tuple[int, int, int] | None = None
) -> bytes:
    """
    Return a valid RGB PNG of one colour, with an optional diagonal stripe (no imaging library needed).

    :param width: pixels.
    :param height: pixels.
    :param rgb: the background colour.
    :param stripe: the stripe's colour, or ``None``.
    """
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        row = bytearray(bytes(rgb) * width)
        if stripe is not None:
            x0 = (y * width) // height
            for x in range(max(0, x0 - 12), min(width, x0 + 12)):
                row[3 * x : 3 * x + 3] = bytes(stripe)
        rows += row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


def make_mp4(*, width: int = 1280, height: int = 720, seconds: int = 4, fps: int = 24) -> bytes:
    """
    Return a small H.264 MP4 that satisfies R21 as an input video (720p, 24 fps, a few seconds).

    Encoded with PyAV (a dev dependency); a moving bar over a slowly changing background.

    :param width: pixels.
    :param height: pixels.
    :param seconds: length.
    :param fps: frames per second.
    """
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(seconds * fps):
            frame = av.VideoFrame(width, height, "yuv420p")
            luma = bytearray([40 + (index * 2) % 160]) * (width * height)
            bar = (index * 24) % width
            for y in range(height // 3, 2 * height // 3):
                luma[y * width + bar : y * width + min(width, bar + 48)] = b"\xeb" * (
                    min(width, bar + 48) - bar
                )
            frame.planes[0].update(bytes(luma))
            for plane in frame.planes[1:]:
                plane.update(bytes([128]) * plane.buffer_size)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def example_inputs() -> dict[str, tuple[bytes, str]]:
    """Return the objects the examples read, by key under :data:`INPUTS_PREFIX`: ``(body, content type)``."""
    return {
        "first_frame.png": (make_png(640, 360, (32, 64, 128), stripe=(250, 200, 40)), "image/png"),
        "end_frame.png": (make_png(640, 360, (200, 90, 40), stripe=(20, 20, 20)), "image/png"),
        "character.png": (make_png(400, 600, (90, 160, 90), stripe=(240, 240, 240)), "image/png"),
        "source_video.mp4": (make_mp4(), "video/mp4"),
        "prompts.json": (json.dumps(list(EXAMPLE_PROMPTS), indent=2).encode(), "application/json"),
    }


def seed_example_inputs(s3: S3Client, bucket: str) -> list[str]:
    """
    Upload the examples' inputs to ``s3://<bucket>/kling-inputs/`` and return their ``s3://`` URIs.

    :param s3: a boto3 client.
    :param bucket: the bucket (it must exist).
    """
    uris = []
    for name, (body, content_type) in example_inputs().items():
        key = INPUTS_PREFIX + name
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        uris.append(f"s3://{bucket}/{key}")
    return uris


def list_objects(s3: S3Client, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
    """
    Return ``(s3:// URI, size in bytes)`` of every object under ``prefix``, sorted by key.

    :param s3: a boto3 client.
    :param bucket: the bucket.
    :param prefix: the key prefix.
    """
    found: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found.append((f"s3://{bucket}/{item['Key']}", int(item["Size"])))
    return sorted(found)


def example_variables(bucket: str) -> dict[str, str]:
    """
    Return the Airflow variables the example DAGs read.

    :param bucket: where the examples land videos and find their inputs.
    """
    return {"kling_video_bucket": bucket}


@contextlib.contextmanager
def local_backends(
    *,
    bucket: str = DEFAULT_BUCKET,
    task_seconds: float = 8.0,
    echo: Echo | None = None,
) -> Iterator[Backends]:
    """
    Start the local simulator and S3 server, create the bucket, upload the examples' inputs; stop on exit.

    :param bucket: the bucket to create.
    :param task_seconds: how long a simulated video takes (``Pending`` for a fifth, then ``Running``).
    :param echo: where to print progress lines.
    """
    from airflow_provider_kling.testing import KlingSimulator
    from airflow_provider_kling.testing.s3 import LocalS3Server

    say = echo or (lambda _line: None)
    with KlingSimulator(api_key=SIMULATOR_API_KEY, task_seconds=task_seconds) as simulator:
        say(
            f"Kling simulator (ModelVerse task API) on {simulator.base_url}: a video takes {task_seconds:g} s"
        )
        with LocalS3Server(buckets=[bucket]) as s3_server:
            s3 = s3_server.client()
            seed_example_inputs(s3, bucket)
            say(f"Local S3 server (SeaweedFS) on {s3_server.endpoint_url}: bucket {bucket!r}, inputs seeded")
            yield Backends(
                kling_connection={
                    "conn_type": "kling",
                    "host": simulator.base_url,
                    "password": simulator.api_key,
                },
                aws_connection=json.loads(s3_server.airflow_connection_json()),
                bucket=bucket,
                s3=s3,
                variables=example_variables(bucket),
                simulator=simulator,
                s3_server=s3_server,
                description=f"local simulator {simulator.base_url}, local S3 {s3_server.endpoint_url}",
            )


@contextlib.contextmanager
def real_backends_from_env(env: Mapping[str, str], *, echo: Echo | None = None) -> Iterator[Backends]:
    """
    Use the real ModelVerse API (``KLING_API_KEY``), and a real bucket if ``KLING_S3_BUCKET`` is set.

    Without ``KLING_S3_BUCKET`` the videos land in a local S3 server started here. See :data:`REAL_API_HELP`.

    :param env: the environment to read (``os.environ``).
    :param echo: where to print progress lines.
    :raises KeyError: when ``KLING_API_KEY`` is not set.
    """
    say = echo or (lambda _line: None)
    kling_connection: dict[str, Any] = {"conn_type": "kling", "password": env["KLING_API_KEY"]}
    if env.get("KLING_BASE_URL"):
        kling_connection["host"] = env["KLING_BASE_URL"]
    api = env.get("KLING_BASE_URL") or "https://api.modelverse.cn"
    say(f"Real ModelVerse API at {api} (the key comes from KLING_API_KEY): this run is billed")
    bucket = env.get("KLING_S3_BUCKET")
    if not bucket:
        from airflow_provider_kling.testing.s3 import LocalS3Server

        with LocalS3Server(buckets=[DEFAULT_BUCKET]) as s3_server:
            say(f"Local S3 server (SeaweedFS) on {s3_server.endpoint_url}: bucket {DEFAULT_BUCKET!r}")
            yield Backends(
                kling_connection=kling_connection,
                aws_connection=json.loads(s3_server.airflow_connection_json()),
                bucket=DEFAULT_BUCKET,
                s3=s3_server.client(),
                variables=example_variables(DEFAULT_BUCKET),
                s3_server=s3_server,
                description=f"real API {api}, local S3 {s3_server.endpoint_url}",
            )
        return

    import boto3

    extra: dict[str, Any] = {}
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if region:
        extra["region_name"] = region
    if env.get("KLING_S3_ENDPOINT_URL"):
        extra["endpoint_url"] = env["KLING_S3_ENDPOINT_URL"]
    # No credentials in the connection: boto3's default chain (AWS_* variables, profile, instance role)
    # applies in Airflow's processes exactly as in this one.
    aws_connection: dict[str, Any] = {"conn_type": "aws", "extra": extra}
    s3 = boto3.client("s3", region_name=region, endpoint_url=extra.get("endpoint_url"))
    say(f"Real S3 bucket {bucket!r} ({extra.get('endpoint_url', 'AWS')})")
    yield Backends(
        kling_connection=kling_connection,
        aws_connection=aws_connection,
        bucket=bucket,
        s3=s3,
        variables=example_variables(bucket),
        description=f"real API {api}, bucket {bucket}",
    )


def backends_from_env(
    env: Mapping[str, str] | None = None, *, task_seconds: float = 8.0, echo: Echo | None = None
) -> contextlib.AbstractContextManager[Backends]:
    """
    Choose the backends: the real API when ``KLING_API_KEY`` is set, the local simulator otherwise.

    :param env: the environment to read (default ``os.environ``).
    :param task_seconds: the simulator's video time, when local.
    :param echo: where to print progress lines.
    """
    env = os.environ if env is None else env
    if env.get("KLING_API_KEY"):
        return real_backends_from_env(env, echo=echo)
    return local_backends(task_seconds=task_seconds, echo=echo)
