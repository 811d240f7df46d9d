"""Tests of ``airflow_provider_kling.models``: every API rule R1..R22, the keyword constructor, responses."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import logging
import pickle
import re
import struct
import threading
import warnings
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from airflow_provider_kling.models import (
    MAX_EXTERNAL_TASK_ID_LENGTH,
    RULE_ERROR_TYPE,
    AspectRatio,
    ImageInput,
    ImageType,
    KlingIgnoredFieldWarning,
    KlingParameters,
    KlingSubmitResult,
    KlingTask,
    KlingVideoRequest,
    Mode,
    ReferType,
    Shot,
    Sound,
    TaskStatus,
    VideoInput,
    ignored_field_warnings_suppressed,
)

#: Every message starts with a rule ID (or ``spec``) and a body path, then a colon.
MESSAGE = re.compile(r"^(R(?:[1-9]|1[0-9]|2[0-2])|spec) [A-Za-z_][\w.\[\]]*: \S")

# -- media builders (pillow is not installed: tiny encoders) ----------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, *, padding: int = 0) -> bytes:
    """A PNG of black pixels (real pixel data up to a megapixel, else only the header is real)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(width * 3) for _ in range(height)) if width * height <= 1_000_000 else b""
    extra = _png_chunk(b"zzPd", bytes(padding)) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    """The header of a baseline JPEG: SOI, APP0 (JFIF), SOF0, then an empty scan."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = (
        b"\xff\xc0\x00\x11\x08"
        + struct.pack(">HH", height, width)
        + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return (
        b"\xff\xd8" + app0 + sof0 + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00" + b"\xff\xd9"
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PNG_OK = b64(png(400, 300))
JPEG_OK = b64(jpeg(1920, 1080))

# -- helpers ----------------------------------------------------------------------------------------------


def t2v(prompt: str | None = "A cat on a skateboard", **parameters: Any) -> dict[str, Any]:
    """A valid text-to-video body with ``parameters`` changed (``None`` removes a key)."""
    body: dict[str, Any] = {"model": "kling-v3-omni", "parameters": {"aspect_ratio": "16:9"}}
    if prompt is not None:
        body["input"] = {"prompt": prompt}
    for name, value in parameters.items():
        if value is None:
            body["parameters"].pop(name, None)
        else:
            body["parameters"][name] = value
    return body


def shots(*durations: Any, prompt: str = "a shot") -> list[dict[str, Any]]:
    """Shots of the given durations: ints are written as the API's strings (``2`` -> ``"2"``)."""
    return [
        {"index": i + 1, "prompt": prompt, "duration": str(d) if type(d) is int else d}
        for i, d in enumerate(durations)
    ]


def multi(*durations: Any, **parameters: Any) -> dict[str, Any]:
    """A valid multi-shot body (no prompt) with the given shot durations."""
    defaults: dict[str, Any] = {
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": shots(*durations),
    }
    return t2v(None, **(defaults | parameters))


def images(*types: str | None, url: str = "https://example.com/a.png") -> list[dict[str, Any]]:
    return [{"image_url": url} if kind is None else {"image_url": url, "type": kind} for kind in types]


def video(
    refer_type: str | None = "feature", url: str = "https://example.com/in.mp4"
) -> list[dict[str, Any]]:
    return [{"video_url": url} if refer_type is None else {"video_url": url, "refer_type": refer_type}]


def edit(**parameters: Any) -> dict[str, Any]:
    """A valid video-editing body: a ``base`` video and no aspect ratio."""
    return t2v("Make it rain", **({"aspect_ratio": None, "video_list": video("base")} | parameters))


def messages(body: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        KlingVideoRequest.model_validate(body)
    errors = caught.value.errors()
    for error in errors:
        assert error["type"] == RULE_ERROR_TYPE, error
        assert MESSAGE.match(error["msg"]), error["msg"]
        assert not error["msg"].startswith("Value error")
    return [error["msg"] for error in errors]


def validate_quietly(body: Any) -> KlingVideoRequest:
    """Validate, asserting that no field was reported as ignored."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        request = KlingVideoRequest.model_validate(body)
    assert not [w for w in caught if issubclass(w.category, KlingIgnoredFieldWarning)]
    return request


# -- the four documented examples (verbatim from kling-v3-omni-api.zh.md) ---------------------------------

VENDOR_TEXT_TO_VIDEO = """{
    "model": "kling-v3-omni",
    "input": {
      "prompt": "A beautiful sunset over the ocean with waves gently crashing"
    },
    "parameters": {
      "mode": "pro",
      "aspect_ratio": "16:9",
      "duration": 5,
      "sound": "on"
    }
  }"""

VENDOR_FIRST_AND_END_FRAME = """{
    "model": "kling-v3-omni",
    "input": {
      "prompt": "A girl walking through a garden"
    },
    "parameters": {
      "mode": "pro",
      "aspect_ratio": "16:9",
      "duration": 5,
      "image_list": [
        {"image_url": "https://example.com/first_frame.jpg", "type": "first_frame"},
        {"image_url": "https://example.com/last_frame.jpg", "type": "end_frame"}
      ]
    }
  }"""

VENDOR_VIDEO_EDIT = """{
    "model": "kling-v3-omni",
    "input": {
      "prompt": "Add a cinematic color grading effect"
    },
    "parameters": {
      "mode": "pro",
      "video_list": [
        {
          "video_url": "https://example.com/input.mp4",
          "refer_type": "base",
          "keep_original_sound": "yes"
        }
      ]
    }
  }"""

VENDOR_MULTI_SHOT = """{
    "model": "kling-v3-omni",
    "parameters": {
      "mode": "pro",
      "aspect_ratio": "16:9",
      "duration": 5,
      "multi_shot": true,
      "shot_type": "customize",
      "multi_prompt": [
        {"index": 1, "prompt": "<<<image_1>>>A person sitting on a park bench, sunlight filtering through trees", "duration": "2"},
        {"index": 2, "prompt": "A car speeding down a rainy street, headlights glowing", "duration": "3"}
      ],
      "image_list": [
        {"image_url": "https://example.com/person.jpg"}
      ],
      "sound": "on"
    }
  }"""  # noqa: E501


@pytest.mark.parametrize(
    "text",
    [VENDOR_TEXT_TO_VIDEO, VENDOR_FIRST_AND_END_FRAME, VENDOR_VIDEO_EDIT, VENDOR_MULTI_SHOT],
    ids=["text-to-video", "R15-R16-first-and-end-frame", "R4-R17-video-edit", "R8-R12-multi-shot-image"],
)
def test_vendor_examples_validate_and_serialise_unchanged(text: str) -> None:
    body = json.loads(text)
    request = validate_quietly(copy.deepcopy(body))
    assert request.to_api_body() == body
    assert KlingVideoRequest.model_validate_json(text).to_api_body() == body


def test_vendor_examples_properties() -> None:
    edit_request = KlingVideoRequest.model_validate_json(VENDOR_VIDEO_EDIT)
    assert edit_request.is_video_edit
    assert edit_request.has_reference_video
    assert edit_request.effective_duration is None
    multi_shot = KlingVideoRequest.model_validate_json(VENDOR_MULTI_SHOT)
    assert not multi_shot.has_reference_video
    assert not multi_shot.is_video_edit
    assert multi_shot.effective_duration == 5
    assert [shot.duration for shot in multi_shot.parameters.multi_prompt or []] == ["2", "3"]


# -- every rule: invalid cases ----------------------------------------------------------------------------

LONG_ID = "x" * (MAX_EXTERNAL_TASK_ID_LENGTH + 1)

INVALID = [
    # R1
    pytest.param(t2v(None), "R1", "input.prompt", id="R1-no-input"),
    pytest.param(t2v(""), "R1", "input.prompt", id="R1-empty-prompt"),
    pytest.param(t2v("   \n"), "R1", "input.prompt", id="R1-blank-prompt"),
    pytest.param(
        t2v(None, multi_shot=False) | {"input": {"negative_prompt": "x"}},
        "R1",
        "input.prompt",
        id="R1-only-negative",
    ),
    # R2
    pytest.param(t2v("x" * 2501), "R2", "input.prompt", id="R2-prompt-2501"),
    pytest.param(
        t2v() | {"input": {"prompt": "p", "negative_prompt": "n" * 2501}},
        "R2",
        "input.negative_prompt",
        id="R2-negative-2501",
    ),
    pytest.param(t2v() | {"input": {"prompt": 42}}, "R2", "input.prompt", id="R2-prompt-not-a-string"),
    # R3
    pytest.param(t2v(multi_shot="yes"), "R3", "parameters.multi_shot", id="R3-multi-shot-not-a-bool"),
    pytest.param(t2v(multi_shot=1), "R3", "parameters.multi_shot", id="R3-multi-shot-int"),
    # R4
    pytest.param(t2v(aspect_ratio=None), "R4", "parameters.aspect_ratio", id="R4-missing"),
    pytest.param(
        t2v(aspect_ratio=None, video_list=video("feature")),
        "R4",
        "parameters.aspect_ratio",
        id="R4-missing-with-feature-video",
    ),
    pytest.param(t2v(aspect_ratio="4:3"), "R4", "parameters.aspect_ratio", id="R4-unknown-ratio"),
    # R5
    pytest.param(t2v(duration=2), "R5", "parameters.duration", id="R5-too-short"),
    pytest.param(t2v(duration=16), "R5", "parameters.duration", id="R5-too-long"),
    pytest.param(t2v(duration="abc"), "R5", "parameters.duration", id="R5-not-a-number"),
    pytest.param(t2v(duration="5.5"), "R5", "parameters.duration", id="R5-fraction-string"),
    pytest.param(t2v(duration=5.5), "R5", "parameters.duration", id="R5-fraction"),
    pytest.param(t2v(duration=True), "R5", "parameters.duration", id="R5-bool"),
    pytest.param(
        t2v(duration=11, video_list=video("feature")), "R5", "parameters.duration", id="R5-11s-with-video"
    ),
    pytest.param(edit(duration=12), "R5", "parameters.duration", id="R5-12s-with-base-video"),
    # R6
    pytest.param(
        t2v(sound="on", video_list=video("feature")), "R6", "parameters.sound", id="R6-sound-with-video"
    ),
    pytest.param(t2v(sound="loud"), "R6", "parameters.sound", id="R6-unknown-value"),
    pytest.param(t2v(sound=True), "R6", "parameters.sound", id="R6-yaml-bool"),
    # R7
    pytest.param(multi(2, 3, shot_type=None), "R7", "parameters.shot_type", id="R7-missing"),
    pytest.param(multi(2, 3, shot_type="auto"), "R7", "parameters.shot_type", id="R7-unknown-value"),
    # R8
    pytest.param(
        t2v(None, multi_shot=True, shot_type="customize"), "R8", "parameters.multi_prompt", id="R8-no-shots"
    ),
    pytest.param(multi(), "R8", "parameters.multi_prompt", id="R8-empty"),
    pytest.param(
        multi(1, 1, 1, 1, 1, 1, 1, duration=7), "R8", "parameters.multi_prompt", id="R8-seven-shots"
    ),
    pytest.param(
        t2v(None, multi_shot=True, shot_type="customize", multi_prompt="a shot"),
        "R8",
        "parameters.multi_prompt",
        id="R8-not-a-list",
    ),
    # R9
    pytest.param(
        t2v(
            None,
            multi_shot=True,
            shot_type="customize",
            multi_prompt=[{"index": 1, "prompt": "p" * 513, "duration": "5"}],
        ),
        "R9",
        "parameters.multi_prompt[0].prompt",
        id="R9-shot-prompt-513",
    ),
    pytest.param(
        t2v(
            None,
            multi_shot=True,
            shot_type="customize",
            multi_prompt=[{"index": 1, "prompt": None, "duration": "5"}],
        ),
        "R9",
        "parameters.multi_prompt[0].prompt",
        id="R9-shot-prompt-null",
    ),
    # R10
    pytest.param(multi(2, "2.5", "0.5"), "R10", "parameters.multi_prompt[1].duration", id="R10-fraction"),
    pytest.param(multi("", 5), "R10", "parameters.multi_prompt[0].duration", id="R10-empty"),
    pytest.param(multi("abc", 5), "R10", "parameters.multi_prompt[0].duration", id="R10-not-a-number"),
    pytest.param(multi(0, 5), "R10", "parameters.multi_prompt[0].duration", id="R10-zero"),
    pytest.param(multi("-1", 6), "R10", "parameters.multi_prompt[0].duration", id="R10-negative"),
    pytest.param(multi(True, 4), "R10", "parameters.multi_prompt[0].duration", id="R10-bool"),
    pytest.param(
        multi(6, duration=5), "R10", "parameters.multi_prompt[0].duration", id="R10-longer-than-total"
    ),
    pytest.param(
        t2v(None, multi_shot=True, shot_type="customize", multi_prompt=[{"index": 1, "prompt": "p"}]),
        "R10",
        "parameters.multi_prompt[0].duration",
        id="R10-missing",
    ),
    # R11
    pytest.param(multi(2, 2, duration=5), "R11", "parameters.multi_prompt", id="R11-sum-mismatch"),
    pytest.param(multi(3, 3), "R11", "parameters.multi_prompt", id="R11-sum-vs-default-5"),
    # R12
    pytest.param(
        t2v("<<<image_2>>> dances", image_list=images(None)), "R12", "input.prompt", id="R12-image-2-of-1"
    ),
    pytest.param(t2v("like <<<video_1>>>"), "R12", "input.prompt", id="R12-video-without-video"),
    pytest.param(
        t2v("<<<image_0>>> dances", image_list=images(None)), "R12", "input.prompt", id="R12-image-0"
    ),
    pytest.param(
        t2v() | {"input": {"prompt": "p", "negative_prompt": "not <<<image_1>>>"}},
        "R12",
        "input.negative_prompt",
        id="R12-in-negative-prompt",
    ),
    pytest.param(
        t2v(None, multi_shot=True, shot_type="customize", multi_prompt=shots(5, prompt="<<<image_1>>>")),
        "R12",
        "parameters.multi_prompt[0].prompt",
        id="R12-in-shot-prompt",
    ),
    # R13
    pytest.param(t2v(mode="hd"), "R13", "parameters.mode", id="R13-unknown-mode"),
    pytest.param(t2v(mode="PRO"), "R13", "parameters.mode", id="R13-upper-case"),
    # R14
    pytest.param(t2v(image_list=images(*[None] * 8)), "R14", "parameters.image_list", id="R14-eight-images"),
    pytest.param(
        t2v(image_list=images(*[None] * 5), video_list=video("feature")),
        "R14",
        "parameters.image_list",
        id="R14-five-images-with-video",
    ),
    pytest.param(
        t2v(image_list={"image_url": "https://example.com/a.png"}),
        "R14",
        "parameters.image_list",
        id="R14-not-a-list",
    ),
    # R15
    pytest.param(
        t2v(image_list=images("first_frame", None, "end_frame")),
        "R15",
        "parameters.image_list[2].type",
        id="R15-end-frame-with-3-images",
    ),
    # R16
    pytest.param(
        t2v(image_list=images("end_frame")), "R16", "parameters.image_list[0].type", id="R16-end-frame-alone"
    ),
    pytest.param(
        t2v(image_list=images("last_frame")), "R16", "parameters.image_list[0].type", id="R16-unknown-type"
    ),
    # R17
    pytest.param(
        edit(image_list=images("first_frame")),
        "R17",
        "parameters.image_list[0].type",
        id="R17-first-frame-with-base",
    ),
    pytest.param(
        t2v(aspect_ratio=None, video_list=video(None), image_list=images("first_frame", "end_frame")),
        "R17",
        "parameters.image_list[1].type",
        id="R17-default-refer-type-is-base",
    ),
    # R18
    pytest.param(
        t2v(image_list=images(None, url="https://example.com/a.gif")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-gif-extension",
    ),
    pytest.param(
        t2v(image_list=images(None, url="https://example.com/a.webp?x=a.png")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-extension-before-query",
    ),
    pytest.param(
        t2v(image_list=images(None, url="s3://bucket/dir/a.bmp")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-s3-key-extension",
    ),
    pytest.param(
        t2v(image_list=images(None, url="s3://bucket")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-s3-without-key",
    ),
    pytest.param(
        t2v(image_list=images(None, url="ftp://example.com/a.png")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-ftp",
    ),
    pytest.param(
        t2v(image_list=images(None, url="file:///tmp/a.png")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-file",
    ),
    pytest.param(
        t2v(image_list=images(None, url="https:///a.png")),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-no-host",
    ),
    pytest.param(
        t2v(image_list=images(None, url="")), "R18", "parameters.image_list[0].image_url", id="R18-empty"
    ),
    pytest.param(
        t2v(image_list=[{"image_url": 7}]), "R18", "parameters.image_list[0].image_url", id="R18-not-a-string"
    ),
    pytest.param(
        t2v(image_list=[{"type": "first_frame"}]),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-missing",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(png(299, 400)))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-too-small",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(png(1000, 300 + 99)))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-too-wide",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(jpeg(300, 751)))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-jpeg-too-tall",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(jpeg(200, 200)))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-jpeg-too-small",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(b"GIF89a" + bytes(40)))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-gif",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(png(400, 400)[:20]))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-truncated",
    ),
    pytest.param(
        t2v(image_list=images(None, url=b64(b"hello world"))),
        "R18",
        "parameters.image_list[0].image_url",
        id="R18-base64-not-an-image",
    ),
    # R19
    pytest.param(
        t2v(image_list=images(None, url="data:image/png;base64," + PNG_OK)),
        "R19",
        "parameters.image_list[0].image_url",
        id="R19-data-prefix",
    ),
    pytest.param(
        t2v(image_list=images(None, url="iVBORw0KGgo$$$")),
        "R19",
        "parameters.image_list[0].image_url",
        id="R19-bad-characters",
    ),
    pytest.param(
        t2v(image_list=images(None, url=PNG_OK[:-1])),
        "R19",
        "parameters.image_list[0].image_url",
        id="R19-bad-padding",
    ),
    pytest.param(
        t2v(image_list=images(None, url=PNG_OK[:40] + "\n" + PNG_OK[40:])),
        "R19",
        "parameters.image_list[0].image_url",
        id="R19-line-break",
    ),
    pytest.param(
        t2v(image_list=images(None, url="example.com/a.png")),
        "R19",
        "parameters.image_list[0].image_url",
        id="R19-url-without-scheme",
    ),
    # R20
    pytest.param(
        t2v(video_list=video("feature") + video("feature")),
        "R20",
        "parameters.video_list",
        id="R20-two-videos",
    ),
    pytest.param(
        t2v(video_list="https://example.com/in.mp4"), "R20", "parameters.video_list", id="R20-not-a-list"
    ),
    # R21
    pytest.param(
        t2v(video_list=video("feature", url="https://example.com/in.avi")),
        "R21",
        "parameters.video_list[0].video_url",
        id="R21-avi-extension",
    ),
    pytest.param(
        t2v(video_list=video("feature", url="s3://bucket/in.webm")),
        "R21",
        "parameters.video_list[0].video_url",
        id="R21-s3-key-extension",
    ),
    pytest.param(
        t2v(video_list=video("feature", url="ftp://example.com/in.mp4")),
        "R21",
        "parameters.video_list[0].video_url",
        id="R21-ftp",
    ),
    pytest.param(
        t2v(video_list=video("feature", url="in.mp4")),
        "R21",
        "parameters.video_list[0].video_url",
        id="R21-not-a-url",
    ),
    pytest.param(
        t2v(video_list=[{"refer_type": "feature"}]),
        "R21",
        "parameters.video_list[0].video_url",
        id="R21-missing",
    ),
    # R22
    pytest.param(
        t2v(video_list=video("edit")),
        "R22",
        "parameters.video_list[0].refer_type",
        id="R22-unknown-refer-type",
    ),
    pytest.param(
        t2v(
            video_list=[
                {"video_url": "https://e.com/a.mp4", "refer_type": "feature", "keep_original_sound": True}
            ]
        ),
        "R22",
        "parameters.video_list[0].keep_original_sound",
        id="R22-keep-sound-bool",
    ),
    # spec (no rule number)
    pytest.param(t2v() | {"model": "kling-v2"}, "spec", "model", id="spec-model-name"),
    pytest.param(t2v() | {"extra": 1}, "spec", "extra", id="spec-unknown-top-level-field"),
    pytest.param(t2v(fps=30), "spec", "parameters.fps", id="spec-unknown-parameter"),
    pytest.param(
        t2v() | {"input": {"prompt": "p", "promt": "x"}}, "spec", "input.promt", id="spec-unknown-input-field"
    ),
    pytest.param(
        t2v(image_list=[{"image_url": "https://e.com/a.png", "kind": "x"}]),
        "spec",
        "parameters.image_list[0].kind",
        id="spec-unknown-image-field",
    ),
    pytest.param(
        t2v(image_list=["https://example.com/a.png"]),
        "spec",
        "parameters.image_list[0]",
        id="spec-image-item-not-an-object",
    ),
    pytest.param(t2v() | {"parameters": "16:9"}, "spec", "parameters", id="spec-parameters-not-an-object"),
    pytest.param(
        multi(2, 3)
        | {
            "parameters": multi(2, 3)["parameters"]
            | {
                "multi_prompt": [
                    {"index": 1, "prompt": "a", "duration": "2"},
                    {"index": 3, "prompt": "b", "duration": "3"},
                ]
            }
        },
        "spec",
        "parameters.multi_prompt[1].index",
        id="spec-shot-index-gap",
    ),
    pytest.param(
        t2v(
            None,
            multi_shot=True,
            shot_type="customize",
            multi_prompt=[{"index": 0, "prompt": "a", "duration": "5"}],
        ),
        "spec",
        "parameters.multi_prompt[0].index",
        id="spec-shot-index-zero",
    ),
    pytest.param(
        t2v(external_task_id=""), "spec", "parameters.external_task_id", id="spec-external-id-empty"
    ),
    pytest.param(
        t2v(external_task_id=LONG_ID), "spec", "parameters.external_task_id", id="spec-external-id-too-long"
    ),
    pytest.param(t2v(external_task_id=123), "spec", "parameters.external_task_id", id="spec-external-id-int"),
    pytest.param(
        t2v(watermark_enabled="maybe"), "spec", "parameters.watermark_enabled", id="spec-watermark-not-a-bool"
    ),
    pytest.param(
        t2v(image_list=images("first_frame", "first_frame")),
        "spec",
        "parameters.image_list[1].type",
        id="spec-two-first-frames",
    ),
]


@pytest.mark.parametrize(("body", "rule", "field"), INVALID)
def test_invalid_request_names_rule_and_field(body: dict[str, Any], rule: str, field: str) -> None:
    found = messages(body)
    assert any(message.startswith(f"{rule} {field}: ") for message in found), found


# -- every rule: valid cases ------------------------------------------------------------------------------

VALID = [
    pytest.param(t2v(), id="R1-prompt-given"),
    pytest.param(t2v("x" * 2500), id="R2-prompt-2500"),
    pytest.param(t2v() | {"input": {"prompt": "p", "negative_prompt": "n" * 2500}}, id="R2-negative-2500"),
    pytest.param(t2v(multi_shot=False), id="R3-multi-shot-false"),
    pytest.param(t2v(aspect_ratio="9:16"), id="R4-portrait"),
    pytest.param(t2v(aspect_ratio="1:1"), id="R4-square"),
    pytest.param(edit(), id="R4-aspect-optional-when-editing"),
    pytest.param(t2v(aspect_ratio=None, video_list=video(None)), id="R4-R22-omitted-refer-type-is-base"),
    pytest.param(edit(aspect_ratio="16:9"), id="R4-aspect-allowed-when-editing"),
    pytest.param(t2v(duration=3), id="R5-3s"),
    pytest.param(t2v(duration=15), id="R5-15s"),
    pytest.param(t2v(duration=10, video_list=video("feature")), id="R5-10s-with-video"),
    pytest.param(t2v(sound="off", video_list=video("feature")), id="R6-sound-off-with-video"),
    pytest.param(t2v(sound="on"), id="R6-sound-on-without-video"),
    pytest.param(multi(5), id="R7-R8-one-shot"),
    pytest.param(multi(1, 1, 1, 1, 1, 1, duration=6), id="R8-six-shots"),
    pytest.param(
        t2v(
            None,
            multi_shot=True,
            shot_type="customize",
            multi_prompt=[{"index": 1, "prompt": "p" * 512, "duration": "5"}],
        ),
        id="R9-shot-prompt-512",
    ),
    pytest.param(multi(1, 14, duration=15), id="R10-one-second-shot"),
    pytest.param(multi("2", "3"), id="R11-sum-equals-default"),
    pytest.param(multi(4, 4, 4, 3, duration=15), id="R11-sum-15"),
    pytest.param(
        t2v("<<<image_1>>> and <<<image_7>>>", image_list=images(*[None] * 7)), id="R12-image-7-of-7"
    ),
    pytest.param(
        t2v(
            "like <<<video_1>>> with <<<image_2>>>",
            image_list=images(None, None),
            video_list=video("feature"),
        ),
        id="R12-video-and-image",
    ),
    pytest.param(t2v("<<<imagen_9>>> is not a reference"), id="R12-not-a-reference"),
    pytest.param(t2v(mode="std"), id="R13-std"),
    pytest.param(t2v(mode="pro"), id="R13-pro"),
    pytest.param(t2v(image_list=images(*[None] * 7)), id="R14-seven-images"),
    pytest.param(
        t2v(image_list=images(*[None] * 4), video_list=video("feature")), id="R14-four-images-with-video"
    ),
    pytest.param(t2v(image_list=images("first_frame", "end_frame")), id="R15-R16-first-and-end"),
    pytest.param(t2v(image_list=images("first_frame", None, None)), id="R15-first-frame-with-3-images"),
    pytest.param(t2v(image_list=images("first_frame")), id="R16-first-frame-alone"),
    pytest.param(edit(image_list=images(None, None)), id="R17-reference-images-with-base"),
    pytest.param(
        t2v(image_list=images("first_frame"), video_list=video("feature")),
        id="R17-first-frame-with-feature-video",
    ),
    pytest.param(
        t2v(image_list=images(None, url="https://example.com/a.JPG?sig=a.b")),
        id="R18-upper-case-extension-and-query",
    ),
    pytest.param(
        t2v(image_list=images(None, url="https://example.com/image?id=3")), id="R18-url-without-extension"
    ),
    pytest.param(t2v(image_list=images(None, url="http://example.com/a.jpeg")), id="R18-http-jpeg"),
    pytest.param(t2v(image_list=images(None, url="s3://bucket/refs/a.png")), id="R18-s3-png"),
    pytest.param(t2v(image_list=images(None, url=PNG_OK)), id="R18-R19-base64-png"),
    pytest.param(t2v(image_list=images(None, url=JPEG_OK)), id="R18-R19-base64-jpeg"),
    pytest.param(t2v(image_list=images(None, url=b64(png(300, 300)))), id="R18-base64-300x300"),
    pytest.param(t2v(image_list=images(None, url=b64(jpeg(750, 300)))), id="R18-base64-2.5-to-1"),
    pytest.param(
        t2v(image_list=images(None, url=b64(png(20_000, 10_000)))), id="R18-base64-large-dimensions"
    ),
    pytest.param(t2v(video_list=video("feature", url="https://example.com/clip.MOV")), id="R21-mov"),
    pytest.param(
        t2v(video_list=video("feature", url="https://example.com/stream")), id="R21-url-without-extension"
    ),
    pytest.param(t2v(video_list=video("feature", url="s3://bucket/clips/in.mp4")), id="R21-s3-mp4"),
    pytest.param(
        t2v(
            video_list=[
                {"video_url": "https://e.com/a.mp4", "refer_type": "feature", "keep_original_sound": "no"}
            ]
        ),
        id="R22-feature-keep-sound-no",
    ),
    pytest.param(t2v(external_task_id="x" * MAX_EXTERNAL_TASK_ID_LENGTH), id="spec-external-id-64"),
    pytest.param(t2v(external_task_id="日本語 id/with:any chars"), id="spec-external-id-any-characters"),
    pytest.param(t2v(watermark_enabled=True), id="spec-watermark"),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_request_round_trips(body: dict[str, Any]) -> None:
    request = validate_quietly(copy.deepcopy(body))
    assert request.to_api_body() == body


# -- exact messages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            multi(2, 2, duration=5),
            "R11 parameters.multi_prompt: shot durations add up to 4 s, but duration is 5 s",
            id="R11",
        ),
        pytest.param(
            multi(3, 3),
            "R11 parameters.multi_prompt: shot durations add up to 6 s, but duration is 5 s (the default)",
            id="R11-default",
        ),
        pytest.param(t2v("x" * 2501), "R2 input.prompt: 2501 characters, at most 2500", id="R2"),
        pytest.param(t2v(mode="hd"), "R13 parameters.mode: 'hd' is not one of 'std', 'pro'", id="R13"),
        pytest.param(t2v(duration=20), "R5 parameters.duration: 20 s, must be 3 to 15", id="R5"),
        pytest.param(
            multi(2, "2.5"),
            "R10 parameters.multi_prompt[1].duration: '2.5' is not a whole number of seconds "
            "(a string such as '2')",
            id="R10",
        ),
        pytest.param(
            t2v("<<<image_3>>>", image_list=images(None, None)),
            "R12 input.prompt: <<<image_3>>> refers to image 3, but image_list has 2 images",
            id="R12",
        ),
        pytest.param(
            t2v(image_list=images("end_frame")),
            "R16 parameters.image_list[0].type: an 'end_frame' needs a 'first_frame' image",
            id="R16",
        ),
        pytest.param(
            t2v(video_list=video("feature") * 2), "R20 parameters.video_list: 2 videos, at most 1", id="R20"
        ),
        pytest.param(
            t2v(image_list=images(None, url="data:image/png;base64,AAAA")),
            "R19 parameters.image_list[0].image_url: a data: URI is not accepted: send the bare base64 "
            "text, without the 'data:...;base64,' prefix",
            id="R19",
        ),
        pytest.param(
            t2v(image_list=images(None, url=b64(png(200, 800)))),
            "R18 parameters.image_list[0].image_url: the base64 PNG image is 200x800 px, width and "
            "height must each be at least 300 px; aspect ratio 1:4.00 (200x800 px) is outside 1:2.5 to 2.5:1",
            id="R18",
        ),
        pytest.param(
            t2v(mdoe="std"),
            "spec parameters.mdoe: unknown field (did you mean 'mode'?); the allowed fields are mode, "
            "aspect_ratio, duration, sound, multi_shot, shot_type, multi_prompt, image_list, video_list, "
            "watermark_enabled, external_task_id",
            id="spec-unknown-field",
        ),
        pytest.param("not a body", "spec body: expected an object, got a string", id="spec-body"),
    ],
)
def test_exact_messages(body: Any, expected: str) -> None:
    assert expected in messages(body)


def test_error_context_carries_rule_field_and_detail() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingVideoRequest.model_validate(t2v(mode="hd"))
    (error,) = caught.value.errors()
    assert error["loc"] == ("parameters", "mode")
    assert error["ctx"] == {
        "rule": "R13",
        "field": "parameters.mode",
        "detail": "'hd' is not one of 'std', 'pro'",
    }


def test_braces_in_user_text_are_not_formatted() -> None:
    (message,) = messages(t2v(mode="{rule}{field}{detail}"))
    assert message == "R13 parameters.mode: '{rule}{field}{detail}' is not one of 'std', 'pro'"


def test_long_values_are_shortened_in_messages() -> None:
    (message,) = messages(t2v(mode="m" * 10_000))
    assert len(message) < 150


def test_all_problems_of_the_fields_are_reported_together() -> None:
    found = messages(t2v("x" * 3000, mode="hd", sound="loud", duration=99))
    assert [message.split(":")[0] for message in found] == [
        "R2 input.prompt",
        "R13 parameters.mode",
        "R5 parameters.duration",
        "R6 parameters.sound",
    ]


def test_all_problems_of_the_combination_are_reported_together() -> None:
    body = t2v(
        aspect_ratio=None,
        sound="on",
        duration=12,
        video_list=video("feature"),
        image_list=images(*[None] * 5),
    )
    found = messages(body)
    assert {message.split(":")[0] for message in found} == {
        "R4 parameters.aspect_ratio",
        "R5 parameters.duration",
        "R6 parameters.sound",
        "R14 parameters.image_list",
    }


def test_r18_oversize_base64_image() -> None:
    data = png(1000, 1000, padding=10 * 1024 * 1024)
    found = messages(t2v(image_list=images(None, url=b64(data))))
    assert found == [
        f"R18 parameters.image_list[0].image_url: the base64 PNG image is {len(data)} bytes, "
        "at most 10485760 (10 MiB)"
    ]


# -- R3 and R5: ignored fields warn -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(
            multi(5) | {"input": {"prompt": "ignored"}},
            r"R3 input\.prompt is ignored when multi_shot is true",
            id="R3-prompt-with-multi-shot",
        ),
        pytest.param(
            t2v(shot_type="customize"),
            r"R3 parameters\.shot_type is ignored",
            id="R3-shot-type-without-multi-shot",
        ),
        pytest.param(
            t2v(multi_shot=False, shot_type="customize", multi_prompt=shots(9)),
            r"R3 parameters\.shot_type and parameters\.multi_prompt are ignored",
            id="R3-shots-without-multi-shot",
        ),
        pytest.param(
            edit(duration=5), r"R5 parameters\.duration has no effect", id="R5-duration-with-base-video"
        ),
    ],
)
def test_ignored_fields_are_accepted_with_a_warning(body: dict[str, Any], match: str) -> None:
    with pytest.warns(KlingIgnoredFieldWarning, match=match):
        request = KlingVideoRequest.model_validate(body)
    assert request.to_api_body() == body


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: KlingVideoRequest.model_validate(edit(duration=5)), id="model_validate"),
        pytest.param(
            lambda: KlingVideoRequest.build(prompt="p", aspect_ratio="1:1", shot_type="customize"), id="build"
        ),
    ],
)
def test_ignored_field_warning_points_at_the_caller(make: Any) -> None:
    with pytest.warns(KlingIgnoredFieldWarning) as caught:
        make()
    assert [record.filename for record in caught] == [__file__]


def _an_edit_with_a_duration() -> KlingVideoRequest:
    with ignored_field_warnings_suppressed():
        return KlingVideoRequest.model_validate(edit(duration=5))


def _assign_a_base_video_to_parameters_with_a_duration() -> None:
    parameters = KlingParameters.model_validate(
        {"aspect_ratio": "1:1", "duration": 5, "video_list": video("feature")}
    )
    parameters.video_list = [VideoInput.model_validate(item) for item in video("base")]  # validated


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: KlingVideoRequest(**edit(duration=5)), id="constructor"),
        pytest.param(
            lambda: KlingParameters.model_validate(edit(duration=5)["parameters"]), id="parameters-alone"
        ),
        pytest.param(_assign_a_base_video_to_parameters_with_a_duration, id="assignment"),
        pytest.param(
            lambda: _an_edit_with_a_duration().with_external_task_id("mine"), id="with_external_task_id"
        ),
        pytest.param(
            lambda: _an_edit_with_a_duration().with_input_urls(
                {"parameters.video_list[0].video_url": "https://example.com/out.mov"}
            ),
            id="with_input_urls",
        ),
    ],
)
def test_ignored_field_warning_points_at_the_caller_whatever_the_depth(make: Any) -> None:
    """
    Each entry point puts the warning at another depth below the caller: no fixed ``stacklevel`` fits.

    The frames of ``airflow_provider_kling.models.*`` and pydantic are skipped, whichever module of the
    package validates (``request`` here, ``rules`` where the warning is raised).
    """
    with pytest.warns(KlingIgnoredFieldWarning) as caught:
        make()
    assert {record.filename for record in caught} == {__file__}
    assert all(record.lineno != 0 for record in caught)


def test_ignored_field_warnings_suppressed_in_this_thread_only() -> None:
    body = edit(duration=5)
    inside = threading.Event()
    thread = threading.Thread(target=lambda: inside.wait(10) and KlingVideoRequest.model_validate(body))
    thread.start()
    with warnings.catch_warnings(record=True) as caught:  # records every thread's warnings
        warnings.simplefilter("always")
        with ignored_field_warnings_suppressed():
            inside.set()
            thread.join(10)  # the other thread validated while this one suppressed
            request = KlingVideoRequest.model_validate(body)
    assert not thread.is_alive()
    assert request.to_api_body() == body
    found = [str(w.message) for w in caught if issubclass(w.category, KlingIgnoredFieldWarning)]
    assert len(found) == 1  # the other thread's; none from this thread's block
    assert found[0].startswith("R5 parameters.duration")
    with pytest.warns(KlingIgnoredFieldWarning):
        KlingVideoRequest.model_validate(body)  # and on again after the block


def test_ignored_shots_are_still_checked_one_by_one() -> None:
    # A field error stops the checks of the combination, the warning included.
    found = messages(t2v(multi_prompt=shots("2.5")))
    assert found == [
        "R10 parameters.multi_prompt[0].duration: '2.5' is not a whole number of seconds "
        "(a string such as '2')"
    ]


# -- normalisation ----------------------------------------------------------------------------------------


def test_shot_duration_int_is_stored_and_sent_as_a_string() -> None:
    body = multi()
    body["parameters"]["multi_prompt"] = [
        {"index": 1, "prompt": "a shot", "duration": 2},
        {"index": 2, "prompt": "a shot", "duration": 3},
    ]
    request = validate_quietly(body)
    assert request.to_api_body()["parameters"]["multi_prompt"] == shots("2", "3")
    assert Shot(index=1, prompt="p", duration=" 4 ").duration == "4"


def test_numeric_strings_and_string_flags_are_normalised() -> None:
    request = validate_quietly(t2v(duration="7", watermark_enabled="False"))
    assert request.to_api_body()["parameters"] == {
        "aspect_ratio": "16:9",
        "duration": 7,
        "watermark_enabled": False,
    }


def test_explicit_nulls_are_not_sent() -> None:
    body = t2v(mode=None) | {"input": {"prompt": "p", "negative_prompt": None}}
    body["parameters"]["sound"] = None
    assert validate_quietly(body).to_api_body() == {
        "model": "kling-v3-omni",
        "input": {"prompt": "p"},
        "parameters": {"aspect_ratio": "16:9"},
    }


def test_model_is_always_sent() -> None:
    body = t2v()
    del body["model"]
    assert validate_quietly(body).to_api_body()["model"] == "kling-v3-omni"


# -- build ------------------------------------------------------------------------------------------------


def test_build_accepts_enums_strings_and_models() -> None:
    request = KlingVideoRequest.build(
        prompt="A fox",
        mode=Mode.STD,
        aspect_ratio="9:16",
        duration="10",
        sound=Sound.OFF,
        image_list=[
            ImageInput(image_url="https://e.com/a.png", type=ImageType.FIRST_FRAME),
            {"image_url": PNG_OK},
        ],
        video_list=[VideoInput(video_url="https://e.com/v.mp4", refer_type=ReferType.FEATURE)],
        watermark_enabled=False,
        external_task_id="run-1",
    )
    assert request.to_api_body() == {
        "model": "kling-v3-omni",
        "input": {"prompt": "A fox"},
        "parameters": {
            "mode": "std",
            "aspect_ratio": "9:16",
            "duration": 10,
            "sound": "off",
            "image_list": [
                {"image_url": "https://e.com/a.png", "type": "first_frame"},
                {"image_url": PNG_OK},
            ],
            "video_list": [{"video_url": "https://e.com/v.mp4", "refer_type": "feature"}],
            "watermark_enabled": False,
            "external_task_id": "run-1",
        },
    }


def test_build_numbers_shots_given_without_index() -> None:
    request = KlingVideoRequest.build(
        aspect_ratio="16:9",
        duration=6,
        multi_shot="true",
        shot_type="customize",
        multi_prompt=({"prompt": "one", "duration": 2}, {"prompt": "two", "duration": "4"}),
    )
    assert request.to_api_body()["parameters"]["multi_prompt"] == [
        {"index": 1, "prompt": "one", "duration": "2"},
        {"index": 2, "prompt": "two", "duration": "4"},
    ]


def test_build_matches_the_vendor_multi_shot_example() -> None:
    body = json.loads(VENDOR_MULTI_SHOT)
    parameters = body["parameters"]
    assert KlingVideoRequest.build(**parameters).to_api_body() == body


def test_build_validates_like_a_body() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingVideoRequest.build(prompt="p", aspect_ratio="16:9", duration="twenty", mode="hd")
    assert [error["msg"].split(":")[0] for error in caught.value.errors()] == [
        "R13 parameters.mode",
        "R5 parameters.duration",
    ]


def test_build_without_prompt_fails_r1() -> None:
    with pytest.raises(ValidationError, match=r"R1 input\.prompt: required"):
        KlingVideoRequest.build(aspect_ratio="16:9")


# -- helpers for the other parts --------------------------------------------------------------------------


def test_with_external_task_id_returns_a_validated_copy() -> None:
    request = validate_quietly(t2v())
    tagged = request.with_external_task_id("dag-run-task-t1")
    assert tagged.parameters.external_task_id == "dag-run-task-t1"
    assert request.parameters.external_task_id is None
    with pytest.raises(ValidationError) as caught:
        request.with_external_task_id(LONG_ID)
    (error,) = caught.value.errors()
    assert error["loc"] == ("parameters", "external_task_id")
    assert error["msg"] == "spec parameters.external_task_id: 65 characters, at most 64"


def test_s3_inputs_are_listed_and_resolved() -> None:
    body = t2v(
        image_list=images(None, url="s3://refs/a.png") + images(None, url="https://e.com/b.png"),
        video_list=video("feature", url="S3://clips/in.mov"),
    )
    request = validate_quietly(body)
    assert request.has_s3_inputs
    assert request.s3_input_urls == {
        "parameters.image_list[0].image_url": "s3://refs/a.png",
        "parameters.video_list[0].video_url": "S3://clips/in.mov",
    }
    resolved = request.with_input_urls(
        {
            "parameters.image_list[0].image_url": PNG_OK,
            "parameters.video_list[0].video_url": "https://bucket.s3.amazonaws.com/in.mov?X-Amz-Signature=abc",
        }
    )
    assert not resolved.has_s3_inputs
    assert resolved.s3_input_urls == {}
    assert resolved.parameters.image_list is not None
    assert resolved.parameters.image_list[0].image_url == PNG_OK
    assert request.has_s3_inputs  # the original is unchanged


def test_resolved_inputs_are_checked() -> None:
    request = validate_quietly(t2v(image_list=images(None, url="s3://refs/a.png")))
    with pytest.raises(ValidationError, match=r"R18 parameters\.image_list\[0\]\.image_url: the base64 PNG"):
        request.with_input_urls({"parameters.image_list[0].image_url": b64(png(100, 100))})
    with pytest.raises(KeyError, match="not an input URL"):
        request.with_input_urls({"parameters.image_list[1].image_url": PNG_OK})


@pytest.mark.parametrize(
    ("body", "video_edit", "duration", "ratio"),
    [
        pytest.param(t2v(duration=8), False, 8, AspectRatio.LANDSCAPE_16_9, id="text-to-video"),
        pytest.param(t2v(aspect_ratio="1:1"), False, 5, AspectRatio.SQUARE_1_1, id="default-duration"),
        pytest.param(
            t2v(video_list=video("feature"), duration=4),
            False,
            4,
            AspectRatio.LANDSCAPE_16_9,
            id="feature-video",
        ),
        pytest.param(edit(aspect_ratio="9:16"), True, None, None, id="R22-edit"),
        pytest.param(t2v(aspect_ratio=None, video_list=video(None)), True, None, None, id="R22-default-base"),
    ],
)
def test_effective_values(
    body: dict[str, Any], video_edit: bool, duration: int | None, ratio: AspectRatio | None
) -> None:
    request = validate_quietly(body)
    assert request.is_video_edit is video_edit
    assert request.effective_duration == duration
    if not video_edit:  # an edit's output keeps the input video's ratio, whatever the body says
        assert request.parameters.aspect_ratio == ratio


def test_assignment_is_validated() -> None:
    request = validate_quietly(t2v())
    with pytest.raises(ValidationError, match=r"R13 parameters\.mode: 'hd'"):
        request.parameters.mode = "hd"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match=r"R6 parameters\.sound"):
        request.parameters.sound = "loud"  # type: ignore[assignment]


def test_sub_models_validated_alone_name_their_place_in_the_body() -> None:
    with pytest.raises(ValidationError) as caught:
        Shot.model_validate({"index": 1, "prompt": "p" * 513, "duration": "x"})
    assert [error["msg"].split(":")[0] for error in caught.value.errors()] == [
        "R9 parameters.multi_prompt[].prompt",
        "R10 parameters.multi_prompt[].duration",
    ]


# -- hypothesis: anything the model accepts round-trips, and nothing fails without a rule ID -------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="<"), max_size=60)
_IMAGE_URLS = st.sampled_from(
    [
        "https://example.com/a.png",
        "https://example.com/photos/b.JPEG?sig=x.y",
        "http://example.com/c",
        "s3://bucket/refs/d.jpg",
        PNG_OK,
        JPEG_OK,
    ]
)
_VIDEO_URLS = st.sampled_from(
    ["https://example.com/in.mp4", "https://example.com/in.MOV", "s3://b/clips/in.mp4"]
)


def _split(draw: st.DrawFn, total: int, parts: int) -> list[int]:
    """Split ``total`` seconds into ``parts`` shots of at least 1 s."""
    cuts = sorted(
        draw(st.lists(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1, unique=True))
    )
    edges = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(edges)]


def _prompt(draw: st.DrawFn, n_images: int, n_videos: int, max_size: int) -> str:
    """Free text with valid ``<<<image_N>>>``/``<<<video_N>>>`` references."""
    references = [f"<<<image_{n}>>>" for n in range(1, n_images + 1)] + [
        f"<<<video_{n}>>>" for n in range(1, n_videos + 1)
    ]
    pieces = [draw(_TEXT)]
    if references:
        pieces += draw(st.lists(st.sampled_from(references), max_size=3))
    pieces.append(draw(_TEXT))
    text = "".join(pieces)[:max_size]
    return text if text.strip() else "p"


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Canonical bodies (as ``to_api_body`` writes them) that respect every rule, without ignored fields."""
    video_kind = draw(st.sampled_from([None, "feature", "base", "omitted"]))
    has_video = video_kind is not None
    is_edit = video_kind in ("base", "omitted")
    parameters: dict[str, Any] = {}
    if has_video:
        item: dict[str, Any] = {"video_url": draw(_VIDEO_URLS)}
        if video_kind != "omitted":
            item["refer_type"] = video_kind
        if draw(st.booleans()):
            item["keep_original_sound"] = draw(st.sampled_from(["yes", "no"]))
        parameters["video_list"] = [item]
    n_images = draw(st.integers(0, 4 if has_video else 7))
    if n_images:
        kinds: list[str | None] = [None] * n_images
        if not is_edit and draw(st.booleans()):
            first = draw(st.integers(0, n_images - 1))
            kinds[first] = "first_frame"
            if n_images == 2:
                kinds[1 - first] = draw(st.sampled_from([None, "end_frame"]))
        parameters["image_list"] = [
            {"image_url": draw(_IMAGE_URLS)} | ({"type": kind} if kind else {}) for kind in kinds
        ]
    n_videos = 1 if has_video else 0
    if not is_edit or draw(st.booleans()):
        parameters["aspect_ratio"] = draw(st.sampled_from(["16:9", "9:16", "1:1"]))
    if not is_edit and draw(st.booleans()):
        parameters["duration"] = draw(st.integers(3, 10 if has_video else 15))
    total = parameters.get("duration", 5)
    if has_video:
        if draw(st.booleans()):
            parameters["sound"] = "off"
    elif draw(st.booleans()):
        parameters["sound"] = draw(st.sampled_from(["on", "off"]))
    for name, values in (("mode", st.sampled_from(["std", "pro"])), ("watermark_enabled", st.booleans())):
        if draw(st.booleans()):
            parameters[name] = draw(values)
    if draw(st.booleans()):
        parameters["external_task_id"] = draw(
            st.text(min_size=1, max_size=MAX_EXTERNAL_TASK_ID_LENGTH).filter(lambda text: text.strip() != "")
        )
    body: dict[str, Any] = {"model": "kling-v3-omni", "parameters": parameters}
    texts: dict[str, str] = {}
    if draw(st.booleans()):  # multi-shot
        parameters["multi_shot"] = True
        parameters["shot_type"] = "customize"
        durations = _split(draw, total, draw(st.integers(1, min(6, total))))
        parameters["multi_prompt"] = [
            {"index": i + 1, "prompt": _prompt(draw, n_images, n_videos, 512), "duration": str(seconds)}
            for i, seconds in enumerate(durations)
        ]
    else:
        if draw(st.booleans()):
            parameters["multi_shot"] = False
        texts["prompt"] = _prompt(draw, n_images, n_videos, 2500)
    if draw(st.booleans()):
        texts["negative_prompt"] = _prompt(draw, n_images, n_videos, 2500)
    if texts:
        body["input"] = texts
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies())
def test_property_valid_bodies_round_trip_and_build_alike(body: dict[str, Any]) -> None:
    request = validate_quietly(copy.deepcopy(body))
    sent = request.to_api_body()
    assert sent == body
    again = KlingVideoRequest.model_validate(sent)
    assert again.to_api_body() == sent
    assert KlingVideoRequest.model_validate_json(json.dumps(sent)).to_api_body() == sent
    assert again.has_s3_inputs == any(url.lower().startswith("s3://") for url in again.s3_input_urls.values())
    # The keyword constructor builds the same request from the same values.
    keywords = dict(body.get("input", {})) | body["parameters"]
    assert KlingVideoRequest.build(**keywords) == request


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies(), st.data())
def test_property_loose_forms_normalise_to_a_stable_body(body: dict[str, Any], data: st.DataObject) -> None:
    """Ints for shot durations, strings for numbers and flags: accepted, and normalised once for all."""
    loose = copy.deepcopy(body)
    parameters = loose["parameters"]
    if "duration" in parameters and data.draw(st.booleans()):
        parameters["duration"] = str(parameters["duration"])
    for shot in parameters.get("multi_prompt", []):
        if data.draw(st.booleans()):
            shot["duration"] = int(shot["duration"])
    for flag in ("multi_shot", "watermark_enabled"):
        if flag in parameters and data.draw(st.booleans()):
            parameters[flag] = str(parameters[flag]).lower()
    sent = validate_quietly(loose).to_api_body()
    assert sent == body
    assert KlingVideoRequest.model_validate(sent).to_api_body() == sent


RULE = re.compile(r"R(?:[1-9]|1[0-9]|2[0-2])|spec")


def body_path(loc: tuple[int | str, ...]) -> str:
    """The test's own rendering of an error location as a body path."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text = f"{text}.{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "body"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-20, 20) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=6), children, max_size=2)
    ),
    max_leaves=4,
)
_PARAMETER_NAMES = st.sampled_from(
    [
        "mode",
        "aspect_ratio",
        "duration",
        "sound",
        "multi_shot",
        "shot_type",
        "multi_prompt",
        "image_list",
        "video_list",
        "watermark_enabled",
        "external_task_id",
        "unknown",
    ]
)
_ITEM_KEYS = st.sampled_from(
    [
        "index",
        "prompt",
        "duration",
        "image_url",
        "type",
        "video_url",
        "refer_type",
        "keep_original_sound",
        "x",
    ]
)
_ITEMS = st.lists(st.dictionaries(_ITEM_KEYS, _JSON, max_size=4) | _JSON, max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(_PARAMETER_NAMES, _JSON | _ITEMS, max_size=5),
    st.dictionaries(st.sampled_from(["prompt", "negative_prompt", "other"]), _JSON, max_size=2) | _JSON,
)
def test_property_every_error_names_a_rule_and_a_field(parameters: dict[str, Any], inputs: Any) -> None:
    body = {"model": "kling-v3-omni", "input": inputs, "parameters": parameters}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KlingIgnoredFieldWarning)
            request = KlingVideoRequest.model_validate(body)
    except ValidationError as error:
        for item in error.errors():
            assert item["type"] == RULE_ERROR_TYPE
            rule, field, detail = item["ctx"]["rule"], item["ctx"]["field"], item["ctx"]["detail"]
            assert RULE.fullmatch(rule), item
            assert field == body_path(item["loc"]), item
            assert detail, item
            assert item["msg"] == f"{rule} {field}: {detail}"
    else:
        assert KlingVideoRequest.model_validate(request.to_api_body()).to_api_body() == request.to_api_body()


# -- responses --------------------------------------------------------------------------------------------

SPEC_SUCCESS = {
    "output": {
        "task_id": "task_id",
        "task_status": "Success",
        "urls": ["https://xxxxx/xxxx.mp4"],
        "submit_time": 1756959000,
        "finish_time": 1756959050,
    },
    "usage": {"duration": 5},
    "request_id": "",
}
SPEC_FAILURE = {
    "output": {
        "task_id": "task_id",
        "task_status": "Failure",
        "submit_time": 1756959000,
        "finish_time": 1756959019,
        "error_message": "error_message",
    },
    "usage": {"duration": 5},
    "request_id": "",
}


def test_task_from_the_spec_success_example() -> None:
    task = KlingTask.from_api(SPEC_SUCCESS)
    assert task.status is TaskStatus.SUCCESS
    assert task.status.is_terminal
    assert task.as_result() == {
        "kling_task_id": "task_id",
        "status": "Success",
        "urls": ["https://xxxxx/xxxx.mp4"],
        "usage_seconds": 5,
        "submit_time": 1756959000,
        "finish_time": 1756959050,
    }
    assert task.request_id is None


def test_task_from_the_spec_failure_example() -> None:
    task = KlingTask.from_api(SPEC_FAILURE)
    assert task.status is TaskStatus.FAILURE
    assert task.status.is_terminal
    assert task.error_message == "error_message"
    assert task.urls == []
    assert task.finish_time == 1756959019


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            {"output": {"task_id": "t", "task_status": "Running"}},
            {"usage_seconds": None, "urls": []},
            id="missing-usage",
        ),
        pytest.param(
            {"output": {"task_id": "t", "task_status": "Pending", "urls": None}, "usage": None},
            {"urls": []},
            id="null-urls-and-usage",
        ),
        pytest.param(
            {
                "output": {"task_id": "t", "task_status": "Success", "new": 1},
                "usage": {"duration": 3, "tokens": 9},
                "extra": {},
            },
            {"usage_seconds": 3},
            id="extra-fields",
        ),
        pytest.param(
            {"output": {"task_id": "t", "task_status": "success", "error_message": ""}, "usage": "n/a"},
            {"error_message": None},
            id="lower-case-status-and-odd-usage",
        ),
        pytest.param(
            {
                "output": {"task_id": "t", "task_status": "Running", "submit_time": "1756959000"},
                "request_id": "r-1",
            },
            {"submit_time": 1756959000, "request_id": "r-1"},
            id="numeric-string-time",
        ),
    ],
)
def test_task_from_odd_bodies(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    task = KlingTask.from_api(payload)
    for name, value in expected.items():
        assert getattr(task, name) == value


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "Success",
        {"output": "x"},
        {"output": {"task_status": "Success"}},
        {"output": {"task_id": "t"}},
    ],
    ids=["none", "list", "string", "output-not-object", "no-task-id", "no-status"],
)
def test_task_from_unusable_bodies_raises(payload: Any) -> None:
    with pytest.raises(ValidationError):
        KlingTask.from_api(payload)


def test_unknown_status_is_kept_not_terminal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_kling.models"):
        task = KlingTask.from_api({"output": {"task_id": "t", "task_status": "Expired"}})
    assert task.status == "Expired"
    assert task.status.value == "Expired"
    assert task.status not in list(TaskStatus)
    assert not task.status.is_terminal
    assert task.as_result()["status"] == "Expired"
    assert "Unknown Kling task status 'Expired'" in caplog.text
    assert [status.value for status in TaskStatus] == ["Pending", "Running", "Success", "Failure"]


def test_submit_result_from_api() -> None:
    result = KlingSubmitResult.from_api({"output": {"task_id": "task_id"}, "request_id": "request_id"})
    assert (result.task_id, result.request_id) == ("task_id", "request_id")
    with pytest.raises(ValidationError):
        KlingSubmitResult.from_api({"output": {"task_id": ""}})
    with pytest.raises(ValidationError):
        KlingSubmitResult.from_api("oops")


# -- the package ------------------------------------------------------------------------------------------


def test_models_pickle_and_old_pickles_still_load() -> None:
    """Models pickle by their module path; a pickle made when they lived in ``models.py`` still loads."""
    request = validate_quietly(multi(2, 3, aspect_ratio="1:1"))
    task = KlingTask.from_api({"output": {"task_id": "t1", "task_status": "Expired"}})
    for value in (request, task, TaskStatus.SUCCESS):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(value, protocol=protocol)) == value
    before_the_split = pickle.dumps(request, protocol=0).replace(
        b"cairflow_provider_kling.models.request\n", b"cairflow_provider_kling.models\n"
    )
    assert b"models.request" not in before_the_split
    assert pickle.loads(before_the_split) == request


def test_the_package_exports_the_public_names_of_the_old_module() -> None:
    import airflow_provider_kling.models as models

    old_public_names = {
        "AspectRatio", "DEFAULT_DURATION", "ImageInput", "ImageType", "KLING_TASK_ID_PATTERN",
        "KeepOriginalSound", "KlingIgnoredFieldWarning", "KlingInput", "KlingParameters",
        "KlingSubmitResult", "KlingTask", "KlingVideoRequest", "Loc", "MAX_DURATION",
        "MAX_DURATION_WITH_VIDEO", "MAX_ERROR_MESSAGE_LENGTH", "MAX_EXTERNAL_TASK_ID_LENGTH", "MAX_IMAGES",
        "MAX_IMAGES_WITH_END_FRAME", "MAX_IMAGES_WITH_VIDEO", "MAX_KLING_TASK_ID_LENGTH",
        "MAX_PROMPT_LENGTH", "MAX_REQUEST_ID_LENGTH", "MAX_RESULT_URL_LENGTH", "MAX_SHOTS",
        "MAX_SHOT_PROMPT_LENGTH", "MAX_VIDEOS", "MIN_DURATION", "MODEL_NAME", "Mode", "RULE_ERROR_TYPE",
        "ReferType", "Shot", "ShotType", "Sound", "TaskStatus", "VideoInput", "check_kling_task_id",
        "ignored_field_warnings_suppressed",
    }  # fmt: skip
    assert set(models.__all__) == old_public_names
    assert all(getattr(models, name) is not None for name in old_public_names)
