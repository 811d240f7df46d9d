"""
Generate the simulator's result videos: small, real, playable H.264 MP4 files, one per aspect ratio.

Development tool, run once; its output is committed under ``airflow_provider_kling/testing/media/``::

    .venv/bin/python tools/generate_video_fixtures.py

It needs PyAV (``av``, a dev dependency). The provider itself never imports ``av``: the simulator only
serves the committed files.

Each video is 2 s at 24 fps (48 frames), H.264 High profile in ``yuv420p``, with the ``moov`` box first
(``+faststart``) so a browser can start playing before the download ends. The picture is a scrolling
diagonal gradient with a bright square that crosses the frame and a frame counter bar along the bottom,
so it is visibly moving video. A 16:9, a 9:16 and a 1:1 file; each is a few tens of kilobytes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import av

#: Where the simulator looks for its media (inside the package, so the files ship as package data).
MEDIA_DIR = Path(__file__).resolve().parent.parent / "airflow_provider_kling" / "testing" / "media"
FPS = 24
SECONDS = 2
#: Constant rate factor of libx264: higher is smaller; 30 keeps the files small and still legible.
CRF = 30


@dataclass(frozen=True)
class Fixture:
    """
    One video to generate.

    :param file_name: name of the file in the media directory.
    :param width: width in pixels (even).
    :param height: height in pixels (even).
    """

    file_name: str
    width: int
    height: int


FIXTURES = (
    Fixture("result_16x9.mp4", 320, 180),
    Fixture("result_9x16.mp4", 180, 320),
    Fixture("result_1x1.mp4", 240, 240),
)


def _luma_plane(width: int, height: int, line_size: int, frame_index: int, frames: int) -> bytes:
    """Return the Y plane of one frame: a scrolling gradient, a moving square and a progress bar."""
    shift = frame_index * 4
    side = min(width, height) // 4
    travel = width - side
    square_x = travel * frame_index // max(frames - 1, 1)
    square_y = (height - side) // 2
    bar_width = width * (frame_index + 1) // frames
    bar_top = height - max(height // 16, 4)
    padding = bytes(line_size - width)
    plane = bytearray()
    for y in range(height):
        if y >= bar_top:
            row = bytes([235]) * bar_width + bytes([16]) * (width - bar_width)
        else:
            diagonal = width + height
            row_values = bytearray(((x + y + shift) * 160 // diagonal) % 160 + 40 for x in range(width))
            if square_y <= y < square_y + side:
                row_values[square_x : square_x + side] = bytes([235]) * side
            row = bytes(row_values)
        plane += row + padding
    return bytes(plane)


def _chroma_plane(width: int, height: int, line_size: int, value: int) -> bytes:
    """Return a flat chroma plane (``width`` x ``height`` are the chroma plane's own dimensions)."""
    return (bytes([value]) * width + bytes(line_size - width)) * height


def generate(fixture: Fixture, directory: Path) -> Path:
    """
    Encode one fixture video and return its path.

    :param fixture: the video to generate.
    :param directory: the directory to write it to.
    """
    path = directory / fixture.file_name
    frames = FPS * SECONDS
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(
            "libx264",
            rate=FPS,
            options={"crf": str(CRF), "preset": "slow", "profile": "high", "threads": "1"},
        )
        stream.width = fixture.width
        stream.height = fixture.height
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame(fixture.width, fixture.height, "yuv420p")
            luma, blue, red = frame.planes
            luma.update(_luma_plane(fixture.width, fixture.height, luma.line_size, index, frames))
            # A hue that drifts over the clip: blue-difference and red-difference planes.
            blue.update(_chroma_plane(blue.width, blue.height, blue.line_size, 64 + 2 * index))
            red.update(_chroma_plane(red.width, red.height, red.line_size, 192 - 2 * index))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def main(argv: list[str] | None = None) -> int:
    """
    Generate every fixture and print its size.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=MEDIA_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    for fixture in FIXTURES:
        path = generate(fixture, output_dir)
        print(f"{path}: {fixture.width}x{fixture.height}, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
