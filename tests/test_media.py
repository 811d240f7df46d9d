"""Tests of the header readers and the pure R18/R21 checks in ``airflow_provider_kling.media``."""

from __future__ import annotations

import fractions
import pickle
import struct
import zlib
from typing import TYPE_CHECKING, cast

import av
import pytest

from airflow_provider_kling import media
from airflow_provider_kling.exceptions import MediaHeaderError, NeedMoreBytesError
from airflow_provider_kling.media import (
    ImageInfo,
    VideoInfo,
    check_image,
    check_video,
    extension_problem,
    find_moov_range,
    read_image_info,
    read_video_info,
)

if TYPE_CHECKING:
    from pathlib import Path

    from av.video.codeccontext import VideoCodecContext

# -- builders ---------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, *, colour_type: int = 2, bit_depth: int = 8) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height``; the pixel data is real only for small images."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00" * width * 3 for _ in range(height)) if width * height <= 10_000 else b""
    return (
        media._PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_bytes(width: int, height: int, *, sof: int = 0xC0, before_sof: bytes = b"") -> bytes:
    """A JPEG header: SOI, a JFIF APP0, optional segments, a frame header, and an empty scan."""
    app0 = jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    frame = jpeg_segment(
        sof, struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    scan = jpeg_segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00")
    return b"\xff\xd8" + app0 + before_sof + frame + scan + b"\x00" * 16 + b"\xff\xd9"


def encode_image(codec: str, width: int, height: int, pix_fmt: str) -> bytes:
    """A real image encoded by FFmpeg through PyAV (``png`` or ``mjpeg``)."""
    context = cast("VideoCodecContext", av.CodecContext.create(codec, "w"))
    context.width, context.height, context.pix_fmt = width, height, pix_fmt
    context.time_base = fractions.Fraction(1, 25)
    frame = av.VideoFrame(width, height, "rgb24").reformat(format=pix_fmt)
    packets = context.encode(frame) + context.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def encode_video(
    path: Path,
    width: int,
    height: int,
    fps: int,
    frames: int,
    *,
    container: str = "mp4",
    faststart: bool = False,
) -> bytes:
    """A real H.264 video encoded by libx264 through PyAV."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path.read_bytes()


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, version: int, payload: bytes) -> bytes:
    return box(kind, bytes((version, 0, 0, 0)) + payload)


def synthetic_moov(
    *,
    width: int = 1280,
    height: int = 720,
    timescale: int = 600,
    duration: int = 3000,
    samples: int = 120,
    delta: int = 25,
    handler: bytes = b"vide",
    version: int = 0,
    stts: bytes | None = None,
) -> bytes:
    """A minimal ``moov``: mvhd, one track with tkhd, mdhd, hdlr and an stts of ``samples`` x ``delta``."""
    if version == 1:
        times = struct.pack(">QQIQ", 0, 0, timescale, duration)
        tkhd_ids = struct.pack(">QQIIQ", 0, 0, 1, 0, duration)
    else:
        times = struct.pack(">IIII", 0, 0, timescale, duration)
        tkhd_ids = struct.pack(">IIIII", 0, 0, 1, 0, duration)
    mvhd = full_box(b"mvhd", version, times + b"\x00" * 80)
    tkhd = full_box(b"tkhd", version, tkhd_ids + b"\x00" * 52 + struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", version, times + b"\x00" * 4)
    hdlr = full_box(b"hdlr", 0, b"\x00" * 4 + handler + b"\x00" * 13)
    stts = stts if stts is not None else full_box(b"stts", 0, struct.pack(">III", 1, samples, delta))
    minf = box(b"minf", box(b"stbl", stts))
    trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))
    return box(b"moov", mvhd + trak)


FTYP_ISOM = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2avc1mp41")


# -- images -----------------------------------------------------------------------------------------------


class TestReadImageInfo:
    @pytest.mark.parametrize(
        ("codec", "pix_fmt", "expected_format"),
        [("png", "rgb24", "png"), ("mjpeg", "yuvj420p", "jpeg")],
        ids=["png", "jpeg"],
    )
    def test_reads_real_encoded_images(self, codec: str, pix_fmt: str, expected_format: str) -> None:
        data = encode_image(codec, 640, 360, pix_fmt)
        assert read_image_info(data) == ImageInfo(expected_format, 640, 360)  # type: ignore[arg-type]

    def test_png_needs_only_its_first_33_bytes(self) -> None:
        data = png_bytes(4000, 1600)
        assert read_image_info(data[:33]) == ImageInfo("png", 4000, 1600)
        with pytest.raises(NeedMoreBytesError) as caught:
            read_image_info(data[:32])
        assert (caught.value.offset, caught.value.end) == (32, 33)

    @pytest.mark.parametrize("length", [0, 1, 5, 7])
    def test_a_short_prefix_of_a_signature_needs_more_bytes(self, length: int) -> None:
        with pytest.raises(NeedMoreBytesError):
            read_image_info(png_bytes(300, 300)[:length])
        if length:
            with pytest.raises(NeedMoreBytesError):
                read_image_info(jpeg_bytes(300, 300)[: min(length, 2)])

    def test_png_with_a_bad_crc_is_corrupt(self) -> None:
        data = bytearray(png_bytes(300, 300))
        data[20] ^= 0xFF  # inside IHDR's width
        with pytest.raises(MediaHeaderError, match="CRC") as caught:
            read_image_info(bytes(data))
        assert not isinstance(caught.value, NeedMoreBytesError)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (media._PNG_SIGNATURE + png_chunk(b"IDAT", b"x" * 13) + b"\x00" * 8, "not IHDR"),
            (
                media._PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)),
                "0x10",
            ),
            (
                media._PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 10, 3, 2, 0, 0, 0)),
                "bit depth",
            ),
        ],
        ids=["first-chunk-not-ihdr", "zero-width", "bad-bit-depth"],
    )
    def test_corrupt_png_headers(self, data: bytes, match: str) -> None:
        with pytest.raises(MediaHeaderError, match=match):
            read_image_info(data)

    def test_jpeg_frame_header_after_a_large_exif_segment(self) -> None:
        exif = jpeg_segment(0xE1, b"Exif\x00\x00" + b"\x00" * 65_000)
        icc = jpeg_segment(0xE2, b"ICC_PROFILE\x00" + b"\x00" * 20_000)
        data = jpeg_bytes(1920, 1080, before_sof=exif + icc)
        with pytest.raises(NeedMoreBytesError) as caught:
            read_image_info(data[: media.HEADER_PREFIX_BYTES])
        assert caught.value.offset == media.HEADER_PREFIX_BYTES
        assert caught.value.end > media.HEADER_PREFIX_BYTES
        # Reading up to the end the error names (plus the frame header) is enough.
        sof_end = data.index(b"\xff\xc0") + 9
        assert read_image_info(data[:sof_end]) == ImageInfo("jpeg", 1920, 1080)

    def test_jpeg_prefix_ending_inside_the_frame_header_needs_more(self) -> None:
        data = jpeg_bytes(800, 600)
        sof = data.index(b"\xff\xc0")
        with pytest.raises(NeedMoreBytesError) as caught:
            read_image_info(data[: sof + 5])
        assert caught.value.end == sof + 9
        assert read_image_info(data[: sof + 9]) == ImageInfo("jpeg", 800, 600)

    @pytest.mark.parametrize("sof", [0xC1, 0xC2, 0xC3, 0xC9, 0xCF], ids=lambda m: f"SOF-{m:02X}")
    def test_every_frame_header_kind(self, sof: int) -> None:
        assert read_image_info(jpeg_bytes(1024, 512, sof=sof)) == ImageInfo("jpeg", 1024, 512)

    def test_jpeg_fill_bytes_and_standalone_markers_are_skipped(self) -> None:
        data = jpeg_bytes(500, 400, before_sof=b"\xff\xff\xff\xd0\xff\x01")
        assert read_image_info(data) == ImageInfo("jpeg", 500, 400)

    def test_huffman_table_marker_is_not_a_frame_header(self) -> None:
        dht = jpeg_segment(0xC4, b"\x00" * 29)
        assert read_image_info(jpeg_bytes(640, 480, before_sof=dht)) == ImageInfo("jpeg", 640, 480)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (b"\xff\xd8" + jpeg_segment(0xDA, b"\x00" * 10) + b"\xff\xd9", "before the frame header"),
            (b"\xff\xd8\xff\xd9", "ends before its frame header"),
            (b"\xff\xd8\xff\xe0\x00\x01", "length 1"),
            (b"\xff\xd8\xff\xe0\x00\x04\x00\x00\x42", "no marker at offset 8"),
            (b"\xff\xd8\xff\x00", "unexpected marker"),
            (jpeg_bytes(0, 100), "width of 0"),
            (jpeg_bytes(100, 0), "DNL"),
            (b"\xff\xd8" + jpeg_segment(0xC0, b"\x08\x00"), "frame header of 4 bytes"),
        ],
        ids=[
            "scan-before-sof",
            "eoi-before-sof",
            "bad-length",
            "no-marker",
            "stuffed-zero",
            "zero-width",
            "dnl",
            "short-sof",
        ],
    )
    def test_corrupt_jpeg_headers(self, data: bytes, match: str) -> None:
        with pytest.raises(MediaHeaderError, match=match) as caught:
            read_image_info(data)
        assert not isinstance(caught.value, NeedMoreBytesError)

    @pytest.mark.parametrize(
        ("data", "name"),
        [
            (b"GIF89a" + b"\x00" * 20, "GIF"),
            (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "WebP"),
            (b"II*\x00" + b"\x00" * 20, "TIFF"),
            (box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic"), "HEIF/AVIF"),
            (b"BM" + b"\x00" * 12 + b"(" + b"\x00" * 40, "BMP"),
        ],
        ids=["gif", "webp", "tiff", "heic", "bmp"],
    )
    def test_other_formats_are_named(self, data: bytes, name: str) -> None:
        with pytest.raises(MediaHeaderError, match=f"a {name} image is not supported"):
            read_image_info(data)

    def test_unknown_bytes_are_not_an_image(self) -> None:
        with pytest.raises(MediaHeaderError, match="not a PNG or JPEG image") as caught:
            read_image_info(b"hello, world! this is text")
        assert not isinstance(caught.value, NeedMoreBytesError)


class TestCheckImageR18:
    @pytest.mark.parametrize(
        ("width", "height", "size", "problems"),
        [
            pytest.param(300, 300, 1000, 0, id="R18-smallest-square"),
            pytest.param(750, 300, None, 0, id="R18-exactly-2.5-to-1"),
            pytest.param(300, 750, None, 0, id="R18-exactly-1-to-2.5"),
            pytest.param(8000, 4000, media.MAX_IMAGE_BYTES, 0, id="R18-size-at-limit"),
            pytest.param(299, 300, None, 1, id="R18-too-narrow"),
            pytest.param(300, 299, None, 1, id="R18-too-low"),
            pytest.param(751, 300, None, 1, id="R18-too-wide-aspect"),
            pytest.param(300, 751, None, 1, id="R18-too-tall-aspect"),
            pytest.param(1000, 1000, media.MAX_IMAGE_BYTES + 1, 1, id="R18-too-big"),
            pytest.param(100, 1000, media.MAX_IMAGE_BYTES + 1, 3, id="R18-everything-wrong"),
        ],
    )
    def test_limits(self, width: int, height: int, size: int | None, problems: int) -> None:
        assert len(check_image(ImageInfo("png", width, height), size)) == problems

    def test_messages_say_what_is_wrong(self) -> None:
        small, aspect = check_image(ImageInfo("jpeg", 200, 800), None)
        assert small == "200x800 px, width and height must each be at least 300 px"
        assert aspect == "aspect ratio 1:4.00 (200x800 px) is outside 1:2.5 to 2.5:1"
        (size,) = check_image(ImageInfo("jpeg", 800, 800), 10_485_761)
        assert size == "10485761 bytes, at most 10485760 (10 MiB)"


@pytest.mark.parametrize(
    ("path", "allowed", "ok"),
    [
        ("/a/photo.JPG", media.IMAGE_EXTENSIONS, True),
        ("/a/photo.jpeg", media.IMAGE_EXTENSIONS, True),
        ("/a/photo.png", media.IMAGE_EXTENSIONS, True),
        ("/a/photo", media.IMAGE_EXTENSIONS, True),
        ("/a.dir/photo", media.IMAGE_EXTENSIONS, True),
        ("", media.IMAGE_EXTENSIONS, True),
        ("/a/photo.webp", media.IMAGE_EXTENSIONS, False),
        ("/a/photo.png.gif", media.IMAGE_EXTENSIONS, False),
        ("clip.MOV", media.VIDEO_EXTENSIONS, True),
        ("clip.mp4", media.VIDEO_EXTENSIONS, True),
        ("clip.avi", media.VIDEO_EXTENSIONS, False),
    ],
)
def test_extension_problem(path: str, allowed: tuple[str, ...], ok: bool) -> None:
    problem = extension_problem(path, allowed)
    assert (problem is None) is ok
    if not ok:
        assert problem is not None
        assert "is not one of" in problem


# -- videos -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h264_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 720x720, 24 fps, 3 s H.264 MP4 with its moov at the end (the encoder's default)."""
    return encode_video(tmp_path_factory.mktemp("video") / "clip.mp4", 720, 720, 24, 72)


@pytest.fixture(scope="module")
def h264_mp4_faststart(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The same video with its moov first (``+faststart``)."""
    return encode_video(tmp_path_factory.mktemp("video") / "clip.mp4", 720, 720, 24, 72, faststart=True)


class TestReadVideoInfo:
    def test_real_h264_mp4_with_moov_at_the_end(self, h264_mp4: bytes) -> None:
        moov_start, moov_end = find_moov_range(h264_mp4, len(h264_mp4))
        assert h264_mp4[moov_start + 4 : moov_start + 8] == b"moov"
        assert moov_end == len(h264_mp4)
        info = read_video_info(h264_mp4)
        assert info == VideoInfo("mp4", 3.0, 720, 720, 24.0, "avc1")
        assert check_video(info, len(h264_mp4)) == []

    def test_moov_at_the_end_is_found_with_ranged_reads(self, h264_mp4: bytes) -> None:
        reads: list[tuple[int, int]] = []

        def read(offset: int, end: int) -> bytes:
            reads.append((offset, end))
            return h264_mp4[offset:end]

        head = read(0, 64)
        start, data, offset = 0, head, 0
        for _ in range(10):
            try:
                moov_start, moov_end = find_moov_range(data, len(h264_mp4), data_offset=offset, start=start)
                break
            except NeedMoreBytesError as more:
                start = offset = more.offset
                data = read(more.offset, max(more.end, more.offset + 16))
        else:
            pytest.fail("the moov box was not found in 10 reads")
        assert len(reads) <= 4
        with pytest.raises(NeedMoreBytesError) as caught:
            read_video_info(head)
        assert caught.value.offset > len(head)
        info = read_video_info(head, moov=read(moov_start, moov_end))
        assert (info.width, info.height, info.fps, info.duration_s) == (720, 720, 24.0, 3.0)

    def test_a_prefix_holding_the_moov_header_names_the_moov_range(self, h264_mp4: bytes) -> None:
        moov_start, moov_end = find_moov_range(h264_mp4, len(h264_mp4))
        with pytest.raises(NeedMoreBytesError) as caught:
            read_video_info(h264_mp4[: moov_start + 100])
        assert (caught.value.offset, caught.value.end) == (moov_start, moov_end)

    def test_faststart_mp4_is_read_from_its_first_bytes(self, h264_mp4_faststart: bytes) -> None:
        moov_start, moov_end = find_moov_range(h264_mp4_faststart[:64], len(h264_mp4_faststart))
        assert moov_start < moov_end < media.HEADER_PREFIX_BYTES
        info = read_video_info(h264_mp4_faststart[: media.HEADER_PREFIX_BYTES])
        assert info == VideoInfo("mp4", 3.0, 720, 720, 24.0, "avc1")

    def test_real_mov_is_a_mov_and_too_small_for_r21(self, tmp_path: Path) -> None:
        data = encode_video(tmp_path / "clip.mov", 64, 48, 30, 12, container="mov")
        info = read_video_info(data)
        assert (info.container, info.width, info.height, info.fps) == ("mov", 64, 48, 30.0)
        assert info.duration_s == pytest.approx(0.4, abs=0.01)
        problems = check_video(info, len(data))
        assert len(problems) == 2
        assert "at least 3 s" in problems[0]
        assert "720 to 2160 px" in problems[1]

    def test_fragmented_mp4_without_durations_reports_unknowns(self, tmp_path: Path) -> None:
        path = tmp_path / "frag.mp4"
        with av.open(
            str(path), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}
        ) as output:
            stream = output.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for index in range(24):
                frame = av.VideoFrame(64, 64, "yuv420p")
                frame.pts = index
                output.mux(stream.encode(frame))
            output.mux(stream.encode(None))
        info = read_video_info(path.read_bytes())
        assert (info.width, info.height) == (64, 64)
        assert info.duration_s is None
        problems = check_video(info, None)
        assert any("does not declare its duration" in problem for problem in problems)

    @pytest.mark.parametrize("version", [0, 1], ids=["v0-boxes", "v1-boxes"])
    def test_synthetic_moov(self, version: int) -> None:
        moov = synthetic_moov(version=version)
        info = read_video_info(FTYP_ISOM + moov)
        assert info == VideoInfo("mp4", 5.0, 1280, 720, 24.0, None)

    def test_moov_given_separately(self) -> None:
        info = read_video_info(FTYP_ISOM + box(b"mdat", b"\x00" * 100), moov=synthetic_moov(timescale=1000))
        assert info.duration_s == 3.0
        assert info.fps == pytest.approx(120 * 1000 / (120 * 25))

    def test_64_bit_box_sizes_and_a_size_zero_last_box(self) -> None:
        large_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 50) + b"\x00" * 50
        moov = synthetic_moov()
        tail = struct.pack(">I4s", 0, b"free") + b"\x00" * 10
        data = FTYP_ISOM + large_mdat + moov + tail
        start = len(FTYP_ISOM) + len(large_mdat)
        assert find_moov_range(data, len(data)) == (start, start + len(moov))
        assert read_video_info(data).width == 1280

    def test_size_zero_moov_runs_to_the_end_of_the_file(self) -> None:
        moov = synthetic_moov()
        data = FTYP_ISOM + struct.pack(">I4s", 0, b"moov") + moov[8:]
        assert find_moov_range(data, len(data)) == (len(FTYP_ISOM), len(data))

    @pytest.mark.parametrize(
        ("brand", "container"), [(b"qt  ", "mov"), (b"mp42", "mp4"), (b"M4V ", "mp4"), (b"3gp4", "3gp")]
    )
    def test_container_from_the_major_brand(self, brand: bytes, container: str) -> None:
        ftyp = box(b"ftyp", brand + b"\x00" * 4)
        assert read_video_info(ftyp + synthetic_moov()).container == container

    def test_quicktime_without_ftyp_is_a_mov(self) -> None:
        data = box(b"wide") + box(b"mdat", b"\x00" * 10) + synthetic_moov()
        assert read_video_info(data).container == "mov"

    def test_3gp_fails_r21(self) -> None:
        info = read_video_info(box(b"ftyp", b"3gp4\x00\x00\x00\x00") + synthetic_moov())
        assert check_video(info, None) == ["a 3GP file, only MP4 and MOV are accepted"]

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (png_bytes(300, 300), "not an MP4/MOV file"),
            (box(b"ftyp", b"heic\x00\x00\x00\x00") + synthetic_moov(), "not a video"),
            (FTYP_ISOM + synthetic_moov(handler=b"soun"), "no video track"),
            (FTYP_ISOM + box(b"moov", full_box(b"mvhd", 0, b"\x00" * 4)), "mvhd box is too short"),
            (FTYP_ISOM + box(b"moov", struct.pack(">I4s", 500, b"trak")), "does not fit its parent"),
            (FTYP_ISOM + synthetic_moov(width=0, height=0), "does not declare its picture size"),
        ],
        ids=["png", "heic", "audio-only", "short-mvhd", "child-overflows", "no-size"],
    )
    def test_unreadable_videos(self, data: bytes, match: str) -> None:
        with pytest.raises(MediaHeaderError, match=match) as caught:
            read_video_info(data)
        assert not isinstance(caught.value, NeedMoreBytesError)

    def test_stts_entry_count_is_bounded_by_the_box(self) -> None:
        stts = full_box(b"stts", 0, struct.pack(">III", 1_000_000, 1, 1))
        with pytest.raises(MediaHeaderError, match="1000000 entries that do not fit"):
            read_video_info(FTYP_ISOM + synthetic_moov(stts=stts))

    def test_a_box_past_the_end_of_the_file_is_corrupt(self) -> None:
        data = FTYP_ISOM + struct.pack(">I4s", 10_000, b"mdat") + b"\x00" * 10
        with pytest.raises(MediaHeaderError, match="past the end") as caught:
            find_moov_range(data, len(data))
        assert not isinstance(caught.value, NeedMoreBytesError)

    def test_no_moov_in_a_complete_file(self) -> None:
        data = FTYP_ISOM + box(b"mdat", b"\x00" * 20)
        with pytest.raises(MediaHeaderError, match="no moov box"):
            find_moov_range(data, len(data))

    def test_not_an_mp4_for_find_moov_range(self) -> None:
        data = png_bytes(300, 300)
        with pytest.raises(MediaHeaderError, match="not an MP4/MOV file"):
            find_moov_range(data, len(data))

    def test_moov_bytes_must_be_a_moov_box(self) -> None:
        with pytest.raises(MediaHeaderError, match="not moov"):
            read_video_info(FTYP_ISOM, moov=box(b"free", b"\x00" * 8))

    def test_need_more_bytes_survives_pickling(self) -> None:
        error = pickle.loads(pickle.dumps(NeedMoreBytesError(10, 26, "a box header")))
        assert (error.offset, error.end, str(error)) == (
            10,
            26,
            "need more bytes: a box header needs bytes 10 to 26 of the file",
        )


class TestCheckVideoR21:
    @staticmethod
    def info(**changes: object) -> VideoInfo:
        values: dict[str, object] = {
            "container": "mp4",
            "duration_s": 5.0,
            "width": 1280,
            "height": 720,
            "fps": 30.0,
        }
        values.update(changes)
        return VideoInfo(**values)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("changes", "size", "feature", "problems"),
        [
            pytest.param({}, 1000, False, 0, id="R21-fine"),
            pytest.param({"container": "mov"}, None, False, 0, id="R21-mov"),
            pytest.param({"duration_s": 3.0}, None, True, 0, id="R21-exactly-3s"),
            pytest.param({"duration_s": 2.99}, None, False, 1, id="R21-too-short"),
            pytest.param({"duration_s": 10.0}, None, True, 0, id="R21-feature-10s"),
            pytest.param({"duration_s": 10.01}, None, True, 1, id="R21-feature-too-long"),
            pytest.param({"duration_s": 30.0}, None, False, 0, id="R21-base-video-long"),
            pytest.param({"width": 720, "height": 2160}, None, False, 0, id="R21-side-limits"),
            pytest.param({"width": 719}, None, False, 1, id="R21-too-narrow"),
            pytest.param({"height": 2161}, None, False, 1, id="R21-too-high"),
            pytest.param({"fps": 24000 / 1001}, None, False, 0, id="R21-ntsc-film-23.976"),
            pytest.param({"fps": 23.9}, None, False, 1, id="R21-fps-too-low"),
            pytest.param({"fps": 60.0}, None, False, 0, id="R21-fps-60"),
            pytest.param({"fps": 60.1}, None, False, 1, id="R21-fps-too-high"),
            pytest.param({"fps": None}, None, False, 1, id="R21-fps-unknown"),
            pytest.param({}, media.MAX_VIDEO_BYTES, False, 0, id="R21-size-at-limit"),
            pytest.param({}, media.MAX_VIDEO_BYTES + 1, False, 1, id="R21-too-big"),
        ],
    )
    def test_limits(self, changes: dict[str, object], size: int | None, feature: bool, problems: int) -> None:
        assert len(check_video(self.info(**changes), size, feature_reference=feature)) == problems
