"""
``s3://`` inputs: checked from their headers in the real local S3 server (R18, R21), then sent as base64 or
presigned URLs; invalid inputs fail before any submit.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import pytest

from airflow_provider_kling import media, s3_inputs
from airflow_provider_kling.exceptions import KlingS3InputError
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.s3_inputs import DEFAULT_PRESIGN_SECONDS, resolve_s3_inputs

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

    from airflow_provider_kling.testing import KlingSimulator

pytestmark = pytest.mark.integration

SIMULATOR_RESULT = Path(media.__file__).parent / "testing" / "media" / "result_16x9.mp4"


# --- media made here, real files ----------------------------------------------------------------------


def png(width: int, height: int, *, rgb: bool = False, level: int = 9) -> bytes:
    """A real grayscale (or RGB) PNG."""
    channels = 3 if rgb else 1

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(range(256)) * (width * channels // 256) + bytes(width * channels % 256)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height, level))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    """A real baseline JPEG, encoded with PyAV's MJPEG encoder."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="image2pipe") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        frame = av.VideoFrame(width, height, "yuvj420p")
        for plane in frame.planes:
            plane.update(bytes([100]) * (plane.line_size * plane.height))
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def video(
    tmp: Path,
    width: int,
    height: int,
    fps: int,
    seconds: float,
    *,
    container: str = "mp4",
    faststart: bool = False,
) -> bytes:
    """A real H.264 video (flat grey frames, so it encodes in a blink)."""
    path = tmp / f"v-{width}x{height}-{fps}-{seconds}-{faststart}.{container}"
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container, options=options) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([128]) * (plane.line_size * plane.height))
        for index in range(round(fps * seconds)):
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.read_bytes()


def pad_before_moov(data: bytes, padding: int) -> bytes:
    """Insert a ``free`` box before the ``moov`` box (sample offsets point before it, so they stay valid)."""
    position = 0
    while position < len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"moov":
            return (
                data[:position] + struct.pack(">I4s", padding, b"free") + bytes(padding - 8) + data[position:]
            )
        position += size
    raise AssertionError("no moov box")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("videos")
    plain = video(tmp, 720, 720, 24, 3)
    assert plain.index(b"moov") > plain.index(b"mdat")  # moov at the end, as a plain encoder writes it
    return {
        "moov-at-end.mp4": pad_before_moov(plain, 2 * 1024 * 1024),
        "faststart.mp4": video(tmp, 1280, 720, 30, 4, faststart=True),
        "clip.mov": video(tmp, 720, 1280, 24, 3, container="mov"),
        "slow.mp4": video(tmp, 720, 720, 15, 3),
        "long.mp4": video(tmp, 720, 720, 24, 12),
        "short-small.mp4": SIMULATOR_RESULT.read_bytes(),  # 2 s, 320x180
    }


class Bucket:
    """The test's corner of the local S3 server."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def put(self, name: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
        return f"s3://{self.bucket}/{self.prefix}{name}"


@pytest.fixture
def bucket(s3_client: S3Client, s3_bucket: str, s3_prefix: str, aws_connection: str) -> Bucket:
    return Bucket(s3_client, s3_bucket, s3_prefix)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every byte range read from S3 objects: (url, start, bytes returned)."""
    seen: list[tuple[str, int, int]] = []
    original = s3_inputs._S3Object.read

    def read(self: s3_inputs._S3Object, start: int, end: int) -> bytes:
        data = original(self, start, end)
        seen.append((self.url, start, len(data)))
        return data

    monkeypatch.setattr(s3_inputs._S3Object, "read", read)
    return seen


def request_with(
    images: list[str] | None = None, video_url: str | None = None, **video: Any
) -> KlingVideoRequest:
    refs = " ".join(f"<<<image_{n + 1}>>>" for n in range(len(images or [])))
    editing = video_url is not None and video.get("refer_type") != "feature"
    return KlingVideoRequest.build(
        prompt=f"a cat surfing {refs}".strip(),
        aspect_ratio="16:9",
        duration=None if editing else 5,  # R5: an edit takes the input video's length
        image_list=[{"image_url": url} for url in images] if images else None,
        video_list=[{"video_url": video_url, **video}] if video_url else None,
    )


def expect_problems(request: KlingVideoRequest) -> list[str]:
    with pytest.raises(KlingS3InputError) as error:
        resolve_s3_inputs(request)
    assert str(error.value) == "\n".join(error.value.problems)
    return error.value.problems


# --- valid inputs ----------------------------------------------------------------------------------------


def test_R18_R21_valid_inputs_become_base64_and_a_presigned_url(
    bucket: Bucket, videos: dict[str, bytes], reads: list[tuple[str, int, int]]
) -> None:
    image_png, image_jpeg = png(400, 300), jpeg(640, 480)
    png_url = bucket.put("ref.png", image_png)
    jpeg_url = bucket.put("ref.jpg", image_jpeg)
    clip = videos["moov-at-end.mp4"]
    video_url = bucket.put("clip.mp4", clip)

    resolved = resolve_s3_inputs(request_with([png_url, jpeg_url], video_url, refer_type="feature"))

    assert not resolved.has_s3_inputs
    images = resolved.parameters.image_list or []
    assert [base64.b64decode(image.image_url) for image in images] == [image_png, image_jpeg]
    (presigned,) = [item.video_url for item in resolved.parameters.video_list or []]
    assert presigned.startswith(bucket.client.meta.endpoint_url)
    assert httpx.get(presigned, timeout=30).content == clip  # no credentials needed: the URL carries them
    # Only the headers were read: the 64 KiB prefix, the box headers on the way, and the moov box.
    video_bytes_read = sum(length for url, _, length in reads if url == video_url)
    assert video_bytes_read < 100 * 1024 < len(clip)
    assert resolved.parameters.video_list[0].refer_type == "feature"  # type: ignore[index]


def test_R18_R21_presigned_urls_last_six_hours_by_default(bucket: Bucket, videos: dict[str, bytes]) -> None:
    url = bucket.put("clip.mp4", videos["faststart.mp4"])

    resolved = resolve_s3_inputs(request_with(video_url=url))

    (presigned,) = [item.video_url for item in resolved.parameters.video_list or []]
    query = parse_qs(urlsplit(presigned).query)
    if "X-Amz-Expires" in query:  # SigV4
        assert query["X-Amz-Expires"] == [str(DEFAULT_PRESIGN_SECONDS)]
    else:  # SigV2: an absolute expiry time
        import time

        assert abs(int(query["Expires"][0]) - time.time() - DEFAULT_PRESIGN_SECONDS) < 120
    assert DEFAULT_PRESIGN_SECONDS == 6 * 3600


def test_R18_images_can_be_sent_as_presigned_urls(bucket: Bucket) -> None:
    url = bucket.put("ref.png", png(512, 512))

    resolved = resolve_s3_inputs(request_with([url]), inline_images=False)

    (image,) = resolved.parameters.image_list or []
    assert httpx.get(image.image_url, timeout=30).content == png(512, 512)


def test_R21_a_mov_file_and_a_base_video_longer_than_10_s_pass(
    bucket: Bucket, videos: dict[str, bytes]
) -> None:
    mov = bucket.put("clip.mov", videos["clip.mov"])
    long = bucket.put("long.mp4", videos["long.mp4"])

    assert not resolve_s3_inputs(request_with(video_url=mov)).has_s3_inputs
    assert not resolve_s3_inputs(request_with(video_url=long, refer_type="base")).has_s3_inputs


def test_a_request_without_s3_inputs_is_returned_without_touching_s3() -> None:
    request = request_with(["https://example.com/cat.png"])
    assert resolve_s3_inputs(request, aws_conn_id="no_such_connection") is request


def test_presign_seconds_must_fit_s3s_limit(bucket: Bucket) -> None:
    url = bucket.put("ref.png", png(400, 400))
    with pytest.raises(ValueError, match="presign_seconds must be 1 to 604800"):
        resolve_s3_inputs(request_with([url]), presign_seconds=8 * 24 * 3600, inline_images=False)


# --- invalid images (R18) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("small.png", lambda: png(200, 200), "is 200x200 px, width and height must each be at least 300 px"),
        (
            "wide.png",
            lambda: png(1000, 300),
            "is aspect ratio 3.33:1 (1000x300 px) is outside 1:2.5 to 2.5:1",
        ),
        ("tall.jpg", lambda: jpeg(304, 800), "is aspect ratio 1:2.63 (304x800 px) is outside 1:2.5 to 2.5:1"),
        ("big.png", lambda: png(2000, 1800, rgb=True, level=0), "bytes, at most 10485760 (10 MiB)"),
        ("anim.png", lambda: b"GIF89a" + bytes(100), ": a GIF image is not supported: only PNG and JPEG are"),
        ("cut.png", lambda: png(400, 400)[:20], "is a truncated image (20 bytes)"),
    ],
    ids=[
        "R18-too-small",
        "R18-too-wide",
        "R18-too-tall",
        "R18-over-10MiB",
        "R18-not-png-jpeg",
        "R18-truncated",
    ],
)
def test_R18_invalid_images_are_refused(
    bucket: Bucket, name: str, make: Callable[[], bytes], problem: str
) -> None:
    url = bucket.put(name, make())

    (line,) = expect_problems(request_with([url]))

    assert line.startswith(f"R18 parameters.image_list[0].image_url: {url}")
    assert problem in line


def test_R18_a_missing_object_is_refused(bucket: Bucket) -> None:
    url = f"s3://{bucket.bucket}/{bucket.prefix}nothing-here.png"
    (line,) = expect_problems(request_with([url]))
    assert line == f"R18 parameters.image_list[0].image_url: {url} cannot be read: no such object (404)"


# --- invalid videos (R21) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "problems"),
    [
        (
            "short-small.mp4",
            {},
            ["is 2 s long, at least 3 s", "320x180 px, width and height must each be 720 to 2160 px"],
        ),
        ("slow.mp4", {}, ["is 15.000 fps, must be 24 to 60 fps"]),
        ("long.mp4", {"refer_type": "feature"}, ["is 12 s long, a feature reference is at most 10 s"]),
    ],
    ids=["R21-short-and-small", "R21-fps", "R21-feature-too-long"],
)
def test_R21_invalid_videos_are_refused(
    bucket: Bucket, videos: dict[str, bytes], name: str, extra: dict[str, Any], problems: list[str]
) -> None:
    url = bucket.put(name, videos[name])

    (line,) = expect_problems(request_with(video_url=url, **extra))

    assert line.startswith(f"R21 parameters.video_list[0].video_url: {url} ")
    for problem in problems:
        assert problem in line


def test_R21_a_file_that_is_not_a_video_is_refused(bucket: Bucket) -> None:
    url = bucket.put("fake.mp4", png(800, 800))
    (line,) = expect_problems(request_with(video_url=url))
    assert line.startswith(f"R21 parameters.video_list[0].video_url: {url}: not an MP4/MOV file")


def test_R21_the_objects_size_is_checked(
    bucket: Bucket, videos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 200 MiB object would make a slow test: lower the limit instead, the check is the same code.
    data = videos["faststart.mp4"]
    monkeypatch.setattr(media, "MAX_VIDEO_BYTES", len(data) - 1)
    url = bucket.put("clip.mp4", data)

    (line,) = expect_problems(request_with(video_url=url))

    assert f"is {len(data)} bytes, at most {len(data) - 1}" in line


def test_every_problem_is_reported_at_once(bucket: Bucket, videos: dict[str, bytes]) -> None:
    good = bucket.put("good.png", png(400, 400))
    small = bucket.put("small.png", png(100, 100))
    short = bucket.put("short.mp4", videos["short-small.mp4"])

    problems = expect_problems(request_with([good, small], short))

    assert [line.split(":")[0] for line in problems] == [
        "R18 parameters.image_list[1].image_url",
        "R21 parameters.video_list[0].video_url",
    ]


# --- before any submit ----------------------------------------------------------------------------------


def _submit_context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="inputs", run_id="manual__1", task_id="submit", map_index=-1, try_number=1)
    return {"ti": ti, "task_instance": ti}


def _submit_operator(**kwargs: Any) -> Any:
    from airflow_provider_kling.operators.kling import KlingSubmitVideoOperator

    return KlingSubmitVideoOperator(
        task_id="submit",
        prompt="a cat <<<image_1>>>",
        aspect_ratio="16:9",
        wait_for_completion=False,
        **kwargs,
    )


def test_R18_invalid_s3_inputs_fail_before_any_api_call(
    bucket: Bucket, kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    url = bucket.put("small.png", png(200, 200))
    operator = _submit_operator(image_list=[{"image_url": url}])

    with pytest.raises(KlingS3InputError, match=r"^R18 parameters\.image_list\[0\]\.image_url: s3://"):
        operator.execute(_submit_context())

    assert kling_simulator.requests["submit"] == 0
    assert kling_simulator.submitted == []


def test_R18_R21_valid_s3_inputs_are_submitted_resolved(
    bucket: Bucket, videos: dict[str, bytes], kling_simulator: KlingSimulator, kling_connection: str
) -> None:
    image = png(400, 400)
    image_url = bucket.put("ref.png", image)
    video_url = bucket.put("ref.mp4", videos["faststart.mp4"])
    operator = _submit_operator(
        image_list=[{"image_url": image_url}], video_list=[{"video_url": video_url, "refer_type": "feature"}]
    )

    operator.execute(_submit_context())

    (body,) = kling_simulator.submitted
    assert base64.b64decode(body["parameters"]["image_list"][0]["image_url"]) == image
    sent_video = body["parameters"]["video_list"][0]["video_url"]
    assert not sent_video.startswith("s3://")
    assert httpx.get(sent_video, timeout=30).content == videos["faststart.mp4"]
