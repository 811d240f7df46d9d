"""
Header parsing of the media files Kling accepts, and the pure file checks of rules R18 and R21.

Nothing here downloads anything or imports a media library: the readers take bytes and read only the
headers, so the same code serves a base64 image inside a request (the whole file) and an object in S3
(a ranged read of its first bytes, plus the ``moov`` box of an MP4 wherever it lies).

Images (R18): :func:`read_image_info` parses a PNG ``IHDR`` chunk or a JPEG ``SOFn`` segment and returns an
:class:`ImageInfo`; :func:`check_image` lists the R18 problems of an image, given its header and its size.

Videos (R21): :func:`find_moov_range` walks the top-level boxes of an MP4/MOV file, one ranged read at a
time if need be, to find the ``moov`` box (which a plain encoder writes at the end of the file);
:func:`read_video_info` parses ``ftyp`` and ``moov`` into a :class:`VideoInfo`; :func:`check_video` lists the
R21 problems.

Given only a prefix of a file, a reader that runs out of bytes raises :class:`NeedMoreBytesError`, which
says which byte range it needs; every other unreadable header raises :class:`MediaHeaderError`. A caller
that passed the whole file treats :class:`NeedMoreBytesError` as a truncated file.

Sizes: "10 MB" (R18) and "200 MB" (R21) are read as MiB, ``10 * 1024 * 1024`` and ``200 * 1024 * 1024``
bytes, the way most upload limits are implemented. A frame rate of 23.976 (NTSC film) counts as 24 fps.
"""

from __future__ import annotations

import posixpath
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_provider_kling.exceptions import MediaHeaderError, NeedMoreBytesError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: File extensions of images (R18), lower case.
IMAGE_EXTENSIONS: Final = (".jpg", ".jpeg", ".png")
#: Largest image, in bytes (R18: "10 MB", read as MiB).
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
#: Smallest width and height of an image, in pixels (R18).
MIN_IMAGE_SIDE: Final = 300
#: Most elongated aspect ratio of an image, either way (R18: 1:2.5 to 2.5:1, inclusive).
MAX_IMAGE_ELONGATION: Final = Fraction(5, 2)

#: File extensions of videos (R21), lower case.
VIDEO_EXTENSIONS: Final = (".mp4", ".mov")
#: Containers of videos (R21).
VIDEO_CONTAINERS: Final = ("mp4", "mov")
#: Largest video, in bytes (R21: "200 MB", read as MiB).
MAX_VIDEO_BYTES: Final = 200 * 1024 * 1024
#: Shortest video, in seconds (R21).
MIN_VIDEO_SECONDS: Final = 3.0
#: Longest video used as a feature reference, in seconds (R21: "3 to 10 when used as a reference").
MAX_REFERENCE_VIDEO_SECONDS: Final = 10.0
#: Smallest and largest width and height of a video, in pixels (R21).
MIN_VIDEO_SIDE: Final = 720
MAX_VIDEO_SIDE: Final = 2160
#: Slowest and fastest frame rate of a video, in frames per second (R21).
MIN_VIDEO_FPS: Final = 24.0
MAX_VIDEO_FPS: Final = 60.0
#: Tolerance on the frame-rate bounds, so that 23.976 fps (24000/1001) counts as 24 fps.
FPS_TOLERANCE: Final = 0.05

#: How many leading bytes of a file to read first: enough for the headers of nearly every image, and
#: for an MP4 whose ``moov`` box comes first (``+faststart``) unless it is long.
HEADER_PREFIX_BYTES: Final = 64 * 1024

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI: Final = b"\xff\xd8\xff"
#: JPEG start-of-frame markers (SOF0..SOF15 without DHT ``C4``, JPG ``C8`` and DAC ``CC``).
_JPEG_SOF_MARKERS: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
#: JPEG markers that stand alone (no length field): TEM and RST0..RST7.
_JPEG_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD8)})
#: Valid PNG (colour type -> bit depths).
_PNG_BIT_DEPTHS: Final = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}

#: Box types that may start an ISO base media (MP4/MOV) file.
_FIRST_BOX_TYPES: Final = frozenset(
    {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"sidx", b"pdin"}
)
#: ``ftyp`` brands of HEIF/AVIF still images, which are ISO base media files but not videos.
_IMAGE_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})

ImageFormat = Literal["png", "jpeg"]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """
    What an image's header says.

    :param format: ``png`` or ``jpeg``.
    :param width: width in pixels.
    :param height: height in pixels.
    """

    format: ImageFormat
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """
    What an MP4/MOV file's ``ftyp`` and ``moov`` boxes say about its first video track.

    :param container: ``mp4`` or ``mov`` (or ``3gp``, which R21 does not accept).
    :param duration_s: the duration in seconds, or ``None`` if the file does not say.
    :param width: the video track's width in pixels.
    :param height: the video track's height in pixels.
    :param fps: the mean frame rate, or ``None`` if the file does not say (a fragmented MP4 without
        default sample durations).
    :param codec: the sample entry's four-character code (``avc1``, ``hvc1`` ...), if any.
    """

    container: str
    duration_s: float | None
    width: int
    height: int
    fps: float | None
    codec: str | None = None


# -- images -----------------------------------------------------------------------------------------------


def read_image_info(data: bytes) -> ImageInfo:
    """
    Read the format and pixel size of a PNG or JPEG image from its first bytes.

    Works on a prefix of the file: a PNG needs its first 33 bytes; a JPEG needs every segment up to its
    frame header, which follows the metadata (EXIF, ICC profile), so usually a few KiB and at most
    :data:`HEADER_PREFIX_BYTES` for nearly every file.

    :param data: the file, or a prefix of it.
    :raises NeedMoreBytesError: the header runs past ``data``.
    :raises MediaHeaderError: not a PNG or JPEG image, or a corrupt header.
    """
    if data.startswith(_PNG_SIGNATURE):
        return _read_png(data)
    if data.startswith(_JPEG_SOI):
        return _read_jpeg(data)
    if len(data) < len(_PNG_SIGNATURE) and (
        _PNG_SIGNATURE.startswith(data) or _JPEG_SOI.startswith(data[: len(_JPEG_SOI)])
    ):
        raise NeedMoreBytesError(len(data), len(_PNG_SIGNATURE), "the image signature")
    other = _sniff_other_format(data)
    if other:
        raise MediaHeaderError(f"a {other} image is not supported: only PNG and JPEG are")
    raise MediaHeaderError(f"not a PNG or JPEG image (starts with {data[:8].hex(' ') or 'nothing'})")


def _sniff_other_format(data: bytes) -> str | None:
    """Name a well-known format that is not PNG or JPEG, for a clearer error."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS:
        return "HEIF/AVIF"
    if data[:2] == b"BM" and len(data) >= 26 and data[14:15] in (b"\x0c", b"(", b"@", b"l", b"|"):
        return "BMP"
    return None


def _read_png(data: bytes) -> ImageInfo:
    # Signature (8), then the IHDR chunk: length (4) = 13, type (4), data (13), CRC (4).
    end = 8 + 8 + 13 + 4
    if len(data) < end:
        raise NeedMoreBytesError(len(data), end, "the PNG IHDR chunk")
    length, chunk_type = struct.unpack(">I4s", data[8:16])
    if chunk_type != b"IHDR" or length != 13:
        raise MediaHeaderError(f"corrupt PNG: the first chunk is {chunk_type!r} of {length} bytes, not IHDR")
    chunk = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(data[12:29]) != crc:
        raise MediaHeaderError("corrupt PNG: the IHDR chunk's CRC does not match")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", chunk[:10])
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise MediaHeaderError(f"corrupt PNG: IHDR declares {width}x{height} px")
    if bit_depth not in _PNG_BIT_DEPTHS.get(colour_type, set()):
        raise MediaHeaderError(f"corrupt PNG: colour type {colour_type} with bit depth {bit_depth}")
    return ImageInfo("png", width, height)


def _read_jpeg(data: bytes) -> ImageInfo:
    position = 2  # after SOI
    while True:
        if position >= len(data):
            raise NeedMoreBytesError(len(data), position + 4, "the JPEG segments before the frame header")
        if data[position] != 0xFF:
            raise MediaHeaderError(f"corrupt JPEG: no marker at offset {position}")
        # Any number of 0xFF fill bytes may precede a marker.
        marker_at = position
        while marker_at < len(data) and data[marker_at] == 0xFF:
            marker_at += 1
        if marker_at >= len(data):
            raise NeedMoreBytesError(len(data), marker_at + 3, "a JPEG marker")
        marker = data[marker_at]
        if marker in _JPEG_STANDALONE_MARKERS:
            position = marker_at + 1
            continue
        if marker == 0xDA:
            raise MediaHeaderError("corrupt JPEG: image data starts before the frame header (SOF)")
        if marker == 0xD9:
            raise MediaHeaderError("corrupt JPEG: the image ends before its frame header (SOF)")
        if marker in (0x00, 0xD8):
            raise MediaHeaderError(
                f"corrupt JPEG: unexpected marker 0xFF{marker:02X} at offset {marker_at - 1}"
            )
        if marker_at + 3 > len(data):
            raise NeedMoreBytesError(len(data), marker_at + 3, "a JPEG segment length")
        (length,) = struct.unpack(">H", data[marker_at + 1 : marker_at + 3])
        if length < 2:
            raise MediaHeaderError(f"corrupt JPEG: segment 0xFF{marker:02X} has length {length}")
        segment_end = marker_at + 1 + length
        if marker in _JPEG_SOF_MARKERS:
            if length < 8:
                raise MediaHeaderError(f"corrupt JPEG: frame header of {length} bytes")
            if marker_at + 8 > len(data):
                raise NeedMoreBytesError(len(data), marker_at + 8, "the JPEG frame header")
            height, width = struct.unpack(">HH", data[marker_at + 4 : marker_at + 8])
            if width == 0:
                raise MediaHeaderError("corrupt JPEG: the frame header declares a width of 0")
            if height == 0:
                raise MediaHeaderError(
                    "unsupported JPEG: the height is defined after the image data (DNL marker)"
                )
            return ImageInfo("jpeg", width, height)
        position = segment_end


def check_image(info: ImageInfo, size_bytes: int | None) -> list[str]:
    """
    List the R18 problems of an image: empty if it is fine.

    The format is not checked again: :func:`read_image_info` only returns PNG and JPEG images. Each
    problem is a phrase without a rule ID or field name, for the caller to prefix.

    :param info: the image's header.
    :param size_bytes: the file's size in bytes (decoded, for base64), or ``None`` if unknown.
    """
    problems: list[str] = []
    if size_bytes is not None and size_bytes > MAX_IMAGE_BYTES:
        problems.append(f"{size_bytes} bytes, at most {MAX_IMAGE_BYTES} (10 MiB)")
    width, height = info.width, info.height
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        problems.append(f"{width}x{height} px, width and height must each be at least {MIN_IMAGE_SIDE} px")
    # Inclusive bounds, exact (a Fraction): w/h <= 2.5 and h/w <= 2.5.
    wide, narrow = max(width, height), min(width, height)
    if wide > MAX_IMAGE_ELONGATION * narrow:
        ratio = f"{wide / narrow:.2f}:1" if width >= height else f"1:{wide / narrow:.2f}"
        bound = f"{float(MAX_IMAGE_ELONGATION):g}"
        problems.append(f"aspect ratio {ratio} ({width}x{height} px) is outside 1:{bound} to {bound}:1")
    return problems


def extension_problem(path: str, allowed: tuple[str, ...]) -> str | None:
    """
    Say what is wrong with the file extension of a URL path or S3 key, or return ``None``.

    A path without an extension passes: only its content can tell the format.

    :param path: the URL's path (without query string) or the S3 key.
    :param allowed: the allowed extensions, lower case with the dot (``IMAGE_EXTENSIONS``...).
    """
    extension = posixpath.splitext(posixpath.basename(path))[1]
    if not extension or extension.lower() in allowed:
        return None
    return f"file extension {extension!r} is not one of {', '.join(allowed)}"


# -- videos -----------------------------------------------------------------------------------------------


def find_moov_range(data: bytes, file_size: int, *, data_offset: int = 0, start: int = 0) -> tuple[int, int]:
    """
    Find the ``moov`` box of an MP4/MOV file by walking its top-level box headers.

    Pure and resumable: ``data`` holds the file's bytes from ``data_offset``; the walk starts at the box
    header at file offset ``start`` (``0``, or the ``offset`` of a :class:`NeedMoreBytesError` raised by
    an earlier call). When the next header lies outside ``data`` it raises :class:`NeedMoreBytesError`;
    read that range (or more) and call again with ``data_offset=start=error.offset``::

        start, data, offset = 0, first_bytes, 0
        while True:
            try:
                moov_start, moov_end = find_moov_range(data, size, data_offset=offset, start=start)
                break
            except NeedMoreBytesError as more:
                start = offset = more.offset
                data = read(more.offset, max(more.end, more.offset + 16))

    :param data: bytes of the file starting at ``data_offset``.
    :param file_size: the file's total size in bytes.
    :param data_offset: the file offset of ``data[0]``.
    :param start: the file offset of the top-level box header to start from.
    :return: ``(start, end)`` file offsets of the ``moov`` box, header included.
    :raises NeedMoreBytesError: a box header lies outside ``data``.
    :raises MediaHeaderError: not an MP4/MOV file, a corrupt box, or no ``moov`` box.
    """
    position = start
    while position < file_size:
        box_type, _header, size = _top_level_header(data, data_offset, position, file_size)
        if position == 0 and box_type not in _FIRST_BOX_TYPES:
            raise MediaHeaderError(f"not an MP4/MOV file: it starts with a {box_type!r} box")
        if box_type == b"moov":
            return position, position + size
        position += size
    raise MediaHeaderError("no moov box: not a complete MP4/MOV file (or a fragment of one)")


def _top_level_header(
    data: bytes, data_offset: int, position: int, file_size: int | None
) -> tuple[bytes, int, int]:
    """Parse the top-level box header at file offset ``position``: ``(type, header length, box size)``."""
    relative = position - data_offset
    limit = position + 16 if file_size is None else min(position + 16, file_size)
    if relative < 0 or relative + 8 > len(data):
        raise NeedMoreBytesError(position, max(limit, position + 8), "a box header")
    size, box_type = struct.unpack(">I4s", data[relative : relative + 8])
    _check_box_type(box_type, position)
    header = 8
    if size == 1:
        if relative + 16 > len(data):
            raise NeedMoreBytesError(position, position + 16, "a 64-bit box header")
        (size,) = struct.unpack(">Q", data[relative + 8 : relative + 16])
        header = 16
    elif size == 0:
        if file_size is None:
            raise NeedMoreBytesError(position, position + 16, f"the size of the last box {box_type!r}")
        size = file_size - position
    if size < header:
        raise MediaHeaderError(f"corrupt MP4/MOV: box {box_type!r} at offset {position} has size {size}")
    if file_size is not None and position + size > file_size:
        raise MediaHeaderError(
            f"corrupt or truncated MP4/MOV: box {box_type!r} at offset {position} has {size} bytes, past the "
            f"end of the {file_size}-byte file"
        )
    return box_type, header, size


def _check_box_type(box_type: bytes, position: int) -> None:
    # Box types are four printable characters (QuickTime also uses (c) = 0xA9 in metadata boxes).
    if not all(0x20 <= byte <= 0x7E or byte == 0xA9 for byte in box_type):
        raise MediaHeaderError(f"not an MP4/MOV file: no valid box header at offset {position}")


def read_video_info(data: bytes, *, moov: bytes | None = None) -> VideoInfo:
    """
    Read an MP4/MOV file's container, duration, picture size and frame rate from its headers.

    :param data: the file, or a prefix of it that holds the first box (``ftyp``).
    :param moov: the ``moov`` box (header included) when it is not inside ``data``: read it at the range
        :func:`find_moov_range` returns.
    :raises NeedMoreBytesError: ``moov`` was not given and is not wholly inside ``data`` (the error's
        range is the ``moov`` box when its header was found, else the next box header).
    :raises MediaHeaderError: not an MP4/MOV file, a corrupt box, or no video track.
    """
    container = _container(data)
    if moov is None:
        position = 0
        while True:
            box_type, _header, size = _top_level_header(data, 0, position, None)
            if position == 0 and box_type not in _FIRST_BOX_TYPES:
                raise MediaHeaderError(f"not an MP4/MOV file: it starts with a {box_type!r} box")
            if box_type == b"moov":
                if position + size > len(data):
                    raise NeedMoreBytesError(position, position + size, "the moov box")
                moov = data[position : position + size]
                break
            position += size
    box_type, header, size = _top_level_header(moov, 0, 0, len(moov))
    if box_type != b"moov":
        raise MediaHeaderError(f"the moov bytes start with a {box_type!r} box, not moov")
    return _parse_moov(moov, header, size, container)


def _container(data: bytes) -> str:
    """Name the container from the ``ftyp`` box: ``mov`` for QuickTime, ``3gp``, else ``mp4``."""
    if len(data) < 12:
        raise NeedMoreBytesError(len(data), 12, "the ftyp box")
    box_type = data[4:8]
    if box_type != b"ftyp":
        _check_box_type(box_type, 0)
        if box_type not in _FIRST_BOX_TYPES:
            raise MediaHeaderError(f"not an MP4/MOV file: it starts with a {box_type!r} box")
        return "mov"  # QuickTime files predating ftyp start with moov, mdat, wide...
    brand = data[8:12]
    if brand in _IMAGE_BRANDS:
        raise MediaHeaderError(f"not a video: an ISO image file (brand {brand.decode('latin-1')!r})")
    if brand == b"qt  ":
        return "mov"
    if brand.startswith(b"3g"):
        return "3gp"
    return "mp4"


def _children(buffer: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, payload start, box end)`` of the boxes in ``buffer[start:end]``."""
    position = start
    while position + 8 <= end:
        size, box_type = struct.unpack(">I4s", buffer[position : position + 8])
        header = 8
        if size == 1:
            if position + 16 > end:
                raise MediaHeaderError(f"corrupt MP4/MOV: truncated box header {box_type!r}")
            (size,) = struct.unpack(">Q", buffer[position + 8 : position + 16])
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise MediaHeaderError(
                f"corrupt MP4/MOV: box {box_type!r} of {size} bytes does not fit its parent"
            )
        yield box_type, position + header, position + size
        position += size


def _child(buffer: bytes, start: int, end: int, box_type: bytes) -> tuple[int, int] | None:
    """Return ``(payload start, end)`` of the first child box of a type, or ``None``."""
    for kind, payload, box_end in _children(buffer, start, end):
        if kind == box_type:
            return payload, box_end
    return None


def _unpack(fmt: str, buffer: bytes, offset: int, end: int, box: str) -> tuple[Any, ...]:
    if offset + struct.calcsize(fmt) > end:
        raise MediaHeaderError(f"corrupt MP4/MOV: the {box} box is too short")
    return struct.unpack_from(fmt, buffer, offset)


def _timescale_duration(buffer: bytes, payload: int, end: int, box: str) -> tuple[int, int]:
    """Return ``(timescale, duration)`` of an ``mvhd`` or ``mdhd`` box (the same layout up to there)."""
    (version,) = _unpack(">B", buffer, payload, end, box)
    if version == 1:
        timescale, duration = _unpack(">IQ", buffer, payload + 20, end, box)
        unknown = 2**64 - 1
    else:
        timescale, duration = _unpack(">II", buffer, payload + 12, end, box)
        unknown = 2**32 - 1
    return timescale, 0 if duration == unknown else duration


@dataclass
class _Track:
    handler: bytes = b""
    track_id: int = 0
    width: int = 0
    height: int = 0
    timescale: int = 0
    duration: int = 0
    samples: int = 0
    sample_ticks: int = 0
    codec: str | None = None
    entry_width: int = 0
    entry_height: int = 0


def _parse_moov(moov: bytes, header: int, end: int, container: str) -> VideoInfo:
    movie_timescale = movie_duration = fragment_duration = 0
    tracks: list[_Track] = []
    default_durations: dict[int, int] = {}
    for kind, payload, box_end in _children(moov, header, end):
        if kind == b"mvhd":
            movie_timescale, movie_duration = _timescale_duration(moov, payload, box_end, "mvhd")
        elif kind == b"trak":
            tracks.append(_parse_trak(moov, payload, box_end))
        elif kind == b"mvex":
            for sub, sub_payload, sub_end in _children(moov, payload, box_end):
                if sub == b"mehd":
                    (version,) = _unpack(">B", moov, sub_payload, sub_end, "mehd")
                    fmt = ">Q" if version == 1 else ">I"
                    (fragment_duration,) = _unpack(fmt, moov, sub_payload + 4, sub_end, "mehd")
                elif sub == b"trex":
                    track_id, _index, sample_duration = _unpack(
                        ">III", moov, sub_payload + 4, sub_end, "trex"
                    )
                    default_durations[track_id] = sample_duration
    video = next((track for track in tracks if track.handler == b"vide"), None)
    if video is None:
        raise MediaHeaderError("no video track in the MP4/MOV file")
    duration_s: float | None = None
    if movie_timescale and (movie_duration or fragment_duration):
        duration_s = (movie_duration or fragment_duration) / movie_timescale
    elif video.timescale and video.duration:
        duration_s = video.duration / video.timescale
    fps: float | None = None
    if video.timescale and video.samples and video.sample_ticks:
        fps = video.samples * video.timescale / video.sample_ticks
    elif video.timescale and default_durations.get(video.track_id):
        fps = video.timescale / default_durations[video.track_id]
    width = video.width or video.entry_width
    height = video.height or video.entry_height
    if not (width and height):
        raise MediaHeaderError("the video track does not declare its picture size")
    return VideoInfo(container, duration_s, width, height, fps, video.codec)


def _parse_trak(moov: bytes, start: int, end: int) -> _Track:
    track = _Track()
    tkhd = _child(moov, start, end, b"tkhd")
    if tkhd is not None:
        payload, box_end = tkhd
        (version,) = _unpack(">B", moov, payload, box_end, "tkhd")
        ids_at = payload + (20 if version == 1 else 12)
        (track.track_id,) = _unpack(">I", moov, ids_at, box_end, "tkhd")
        size_at = payload + (88 if version == 1 else 76)
        width, height = _unpack(">II", moov, size_at, box_end, "tkhd")
        track.width, track.height = width >> 16, height >> 16  # 16.16 fixed point
    mdia = _child(moov, start, end, b"mdia")
    if mdia is None:
        return track
    for kind, payload, box_end in _children(moov, *mdia):
        if kind == b"mdhd":
            track.timescale, track.duration = _timescale_duration(moov, payload, box_end, "mdhd")
        elif kind == b"hdlr":
            (track.handler,) = _unpack(">4s", moov, payload + 8, box_end, "hdlr")
        elif kind == b"minf":
            stbl = _child(moov, payload, box_end, b"stbl")
            if stbl is not None:
                _parse_stbl(moov, *stbl, track)
    return track


def _parse_stbl(moov: bytes, start: int, end: int, track: _Track) -> None:
    for kind, payload, box_end in _children(moov, start, end):
        if kind == b"stts":
            (count,) = _unpack(">I", moov, payload + 4, box_end, "stts")
            if payload + 8 + 8 * count > box_end:
                raise MediaHeaderError(f"corrupt MP4/MOV: stts declares {count} entries that do not fit")
            for index in range(count):
                samples, delta = struct.unpack_from(">II", moov, payload + 8 + 8 * index)
                track.samples += samples
                track.sample_ticks += samples * delta
        elif kind == b"stsd":
            (count,) = _unpack(">I", moov, payload + 4, box_end, "stsd")
            entries = list(_children(moov, payload + 8, box_end)) if count else []
            if entries:
                entry_type, entry_payload, entry_end = entries[0]
                track.codec = entry_type.decode("latin-1")
                # VisualSampleEntry: 8 bytes of SampleEntry, 16 of pre-defined/reserved, then width, height.
                if entry_payload + 28 <= entry_end:
                    track.entry_width, track.entry_height = struct.unpack_from(
                        ">HH", moov, entry_payload + 24
                    )


def check_video(info: VideoInfo, size_bytes: int | None, *, feature_reference: bool = False) -> list[str]:
    """
    List the R21 problems of a video: empty if it is fine.

    Each problem is a phrase without a rule ID or field name, for the caller to prefix.

    :param info: the video's header.
    :param size_bytes: the file's size in bytes, or ``None`` if unknown.
    :param feature_reference: the video is a ``refer_type: feature`` reference, which R21 limits to 10 s.
        A ``base`` video (the one to edit) has no documented upper bound.
    """
    problems: list[str] = []
    if info.container not in VIDEO_CONTAINERS:
        problems.append(f"a {info.container.upper()} file, only MP4 and MOV are accepted")
    if size_bytes is not None and size_bytes > MAX_VIDEO_BYTES:
        problems.append(f"{size_bytes} bytes, at most {MAX_VIDEO_BYTES} (200 MiB)")
    if info.duration_s is None:
        problems.append("the file does not declare its duration, which must be at least 3 s")
    elif info.duration_s < MIN_VIDEO_SECONDS:
        problems.append(f"{info.duration_s:.3g} s long, at least {MIN_VIDEO_SECONDS:g} s")
    elif feature_reference and info.duration_s > MAX_REFERENCE_VIDEO_SECONDS:
        problems.append(
            f"{info.duration_s:.3g} s long, a feature reference is at most {MAX_REFERENCE_VIDEO_SECONDS:g} s"
        )
    if not all(MIN_VIDEO_SIDE <= side <= MAX_VIDEO_SIDE for side in (info.width, info.height)):
        problems.append(
            f"{info.width}x{info.height} px, width and height must each be "
            f"{MIN_VIDEO_SIDE} to {MAX_VIDEO_SIDE} px"
        )
    if info.fps is None:
        problems.append("the file does not declare its frame rate, which must be 24 to 60 fps")
    elif not MIN_VIDEO_FPS - FPS_TOLERANCE <= info.fps <= MAX_VIDEO_FPS + FPS_TOLERANCE:
        problems.append(f"{info.fps:.3f} fps, must be {MIN_VIDEO_FPS:g} to {MAX_VIDEO_FPS:g} fps")
    return problems
