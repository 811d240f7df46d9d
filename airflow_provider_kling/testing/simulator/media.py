"""The result videos: the committed MP4 files (:func:`result_video`) and the padded :class:`ResultBody`."""

from __future__ import annotations

import struct
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Final

from airflow_provider_kling.testing.simulator.errors import KlingSimulatorError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: The committed result videos (``media/``), by aspect ratio: 2 s, 24 fps, H.264 (see
#: ``tools/generate_video_fixtures.py``).
MEDIA_FILES: Final[Mapping[str, str]] = {
    "16:9": "result_16x9.mp4",
    "9:16": "result_9x16.mp4",
    "1:1": "result_1x1.mp4",
}
#: The package whose ``media/`` directory holds the videos.
_MEDIA_PACKAGE: Final = "airflow_provider_kling.testing"
_CHUNK_BYTES: Final = 256 * 1024
_ZEROS: Final = memoryview(bytes(_CHUNK_BYTES))


@cache
def result_video(aspect_ratio: str) -> bytes:
    """
    Return the committed result video for an aspect ratio (a real H.264 MP4 of a few kilobytes).

    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
    """
    try:
        name = MEDIA_FILES[aspect_ratio]
    except KeyError:
        raise KlingSimulatorError(f"No result video for aspect ratio {aspect_ratio!r}") from None
    return (resources.files(_MEDIA_PACKAGE) / "media" / name).read_bytes()


def _smallest_padded_size() -> int:
    """The smallest ``result_size_bytes``: the largest video plus an 8-byte ``free`` box header."""
    return max(len(result_video(ratio)) for ratio in MEDIA_FILES) + 8


class ResultBody:
    """
    The bytes of one result video, optionally padded to an exact size.

    The committed MP4 is followed, if ``size`` asks for more, by an MP4 ``free`` box that pads it to exactly
    ``size`` bytes (the file stays playable: players skip ``free`` boxes).

    The padding is produced on the fly in chunks, so a multi-gigabyte result costs constant memory.

    :param video: the MP4 file.
    :param size: the total size in bytes; ``None`` serves ``video`` unpadded.
    """

    def __init__(self, video: bytes, size: int | None = None) -> None:
        if size is None or size == len(video):
            self._head = video
            self.size = len(video)
            return
        padding = size - len(video)
        if padding < 8:
            raise KlingSimulatorError(
                f"A padded result must be at least {len(video) + 8} bytes (the video and an 8-byte box "
                f"header), not {size}"
            )
        if padding <= 0xFFFFFFFF:
            header = struct.pack(">I4s", padding, b"free")
        else:  # A box over 4 GiB uses the 64-bit "largesize" form.
            header = struct.pack(">I4sQ", 1, b"free", padding)
        self._head = video + header
        self.size = size

    def iter_range(self, start: int, stop: int) -> Iterator[bytes | memoryview]:
        """
        Yield the bytes ``[start, stop)`` in chunks of at most 256 KiB.

        :param start: the first byte.
        :param stop: one past the last byte.
        """
        stop = min(stop, self.size)
        position = start
        head = memoryview(self._head)
        while position < stop and position < len(head):
            end = min(stop, len(head), position + _CHUNK_BYTES)
            yield head[position:end]
            position = end
        while position < stop:
            end = min(stop, position + _CHUNK_BYTES)
            yield _ZEROS[: end - position]
            position = end
