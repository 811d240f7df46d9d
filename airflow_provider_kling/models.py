"""
Pydantic models of the Kling V3 Omni task API: the one home of every API rule (R1..R22).

Every rule of ``shared/spec/kling-v3-omni-api.md`` that can be checked without downloading a file lives
here, once, and its error message starts with the rule ID and names the field by its path in the request
body (list items zero-based), for example::

    R11 parameters.multi_prompt: shot durations add up to 4 s, but duration is 5 s
    R2 input.prompt: 2501 characters, at most 2500
    R13 parameters.mode: 'hd' is not one of 'std', 'pro'

Each of those is the ``msg`` of one error in ``ValidationError.errors()`` (type ``kling_rule``, with the
rule, field and detail in ``ctx``). Wrong types and values get the same treatment: no error surfaces as
pydantic's generic text. Checks the spec gives no number for (``model``, unknown fields, shot indexes,
``external_task_id``, frame types given twice) say ``spec`` in place of a rule ID.

The file checks of R18 and R21 (image format, size and pixel size; video container, length, size and
frame rate) are implemented once in :mod:`airflow_provider_kling.media`; here they run on base64 images,
the only files a request holds. URLs are checked by their extension only; the operator that resolves
``s3://`` inputs runs the full checks on the objects' headers.

Decisions where the spec is silent, all provider rules:

- R1: a prompt of only whitespace counts as empty.
- R3: fields the API ignores (``input.prompt`` with ``multi_shot`` true; ``shot_type`` or ``multi_prompt``
  with ``multi_shot`` false) are accepted and sent, with a :class:`KlingIgnoredFieldWarning`; so is
  ``duration`` with a ``refer_type: base`` video (R5). Code that validates other people's requests (the
  simulator) silences these warnings with :func:`ignored_field_warnings_suppressed`. The shots of an
  ignored ``multi_prompt`` are still checked one by one (R9, R10), but not against the total (R8, R10,
  R11).
- R10: a shot's duration is whole seconds; ``2`` and ``"2"`` are accepted and sent as ``"2"``.
- R12: references are checked in ``input.prompt``, ``input.negative_prompt`` and every shot's prompt,
  whether or not the API uses that text.
- Shot indexes must be ``1, 2, 3...`` in list order. At most one image may be a ``first_frame`` and one an
  ``end_frame``.
- R18/R19: an ``image_url`` with a scheme must be ``https://``, ``http://`` or ``s3://``; anything else is
  bare base64, decoded and checked (10 MB read as 10 MiB of decoded bytes). ``video_url`` must be an
  ``https://``, ``http://`` or ``s3://`` URL.
- ``external_task_id``: the API only says it must be unique per user; empty and blank ids and ids longer
  than :data:`MAX_EXTERNAL_TASK_ID_LENGTH` characters are refused, any characters are allowed.

``s3://bucket/key`` inputs are accepted (the submit operator resolves them before the API sees them, see
:attr:`KlingVideoRequest.s3_input_urls`); they must be resolved before a submit.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import logging
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

from airflow_provider_kling import media
from airflow_provider_kling.constants import MODEL_NAME
from airflow_provider_kling.exceptions import MediaHeaderError, NeedMoreBytesError

log = logging.getLogger(__name__)

#: ``parameters.duration`` when it is not sent (R5).
DEFAULT_DURATION: Final = 5
#: Shortest and longest ``parameters.duration`` (R5), and the longest with a reference video.
MIN_DURATION: Final = 3
MAX_DURATION: Final = 15
MAX_DURATION_WITH_VIDEO: Final = 10
#: Longest ``input.prompt`` and ``input.negative_prompt``, in characters (R2).
MAX_PROMPT_LENGTH: Final = 2500
#: Most shots (R8) and longest shot prompt in characters (R9).
MAX_SHOTS: Final = 6
MAX_SHOT_PROMPT_LENGTH: Final = 512
#: Most images without and with a reference video (R14), and with an ``end_frame`` (R15).
MAX_IMAGES: Final = 7
MAX_IMAGES_WITH_VIDEO: Final = 4
MAX_IMAGES_WITH_END_FRAME: Final = 2
#: Most videos (R20).
MAX_VIDEOS: Final = 1
#: Longest ``external_task_id`` (a provider rule: the API documents no limit).
MAX_EXTERNAL_TASK_ID_LENGTH: Final = 64
#: The ``type`` of every error this module raises: ``err["msg"]`` is ``"<rule> <field>: <detail>"``.
RULE_ERROR_TYPE: Final = "kling_rule"

_RULE_TEMPLATE: Final = "{rule} {field}: {detail}"
#: A URL scheme; bounded, so that a 10 MB base64 string (all scheme characters) is rejected at once.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
_REFERENCE = re.compile(r"<<<(image|video)_(\d+)>>>")
#: At most 18 digits: beyond that no value is valid, and ``int()`` of thousands of digits raises.
_WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")
_SHOWN_CHARACTERS = 60

_E = TypeVar("_E", bound=Enum)
Loc = tuple[str | int, ...]


class KlingIgnoredFieldWarning(UserWarning):
    """A request field the API ignores in this combination (R3, R5): it is sent, but has no effect."""


#: Whether :class:`KlingIgnoredFieldWarning` is emitted in the current context (thread or task).
_ignored_field_warnings: ContextVar[bool] = ContextVar("kling_ignored_field_warnings", default=True)


@contextmanager
def ignored_field_warnings_suppressed() -> Iterator[None]:
    """
    Emit no :class:`KlingIgnoredFieldWarning` inside the block, in this thread (or asyncio task) only.

    ``warnings.catch_warnings`` swaps the process-wide filters and is not thread-safe; this sets a
    context variable instead, which every other thread and task keeps seeing unset. For code that
    validates requests it did not write, e.g. the simulator's server threads::

        with ignored_field_warnings_suppressed():
            request = KlingVideoRequest.model_validate(body)
    """
    token = _ignored_field_warnings.set(False)
    try:
        yield
    finally:
        _ignored_field_warnings.reset(token)


def _warn_ignored(message: str) -> None:
    """Warn with :class:`KlingIgnoredFieldWarning`, attributed to the code that built the request."""
    if not _ignored_field_warnings.get():
        return
    frame = sys._getframe(1)
    level = 2
    # Skip this module's and pydantic's frames (validation runs several frames deep).
    while frame.f_back is not None and _is_validation_frame(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, KlingIgnoredFieldWarning, stacklevel=level)


def _is_validation_frame(module: str) -> bool:
    return module == __name__ or module == "pydantic" or module.startswith("pydantic.")


# -- rule errors ------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised by a field check: ``detail`` says what is wrong; ``rule`` overrides the field's rule."""

    def __init__(self, detail: str, rule: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.rule = rule


def _rule_error(rule: str, field: str, detail: str) -> PydanticCustomError:
    # ``detail`` comes last in the context so that braces in user text are never substituted.
    return PydanticCustomError(
        RULE_ERROR_TYPE, _RULE_TEMPLATE, {"rule": rule, "field": field, "detail": detail}
    )


def _body_path(prefix: str, loc: Loc) -> str:
    """Render a location as a body path: ``parameters.multi_prompt[0].duration`` (odd keys as ``['a b']``)."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text = f"{text}.{part}" if text else part
        else:
            text += f"[{_show(part)}]"
    return text or "body"


def _show(value: Any) -> str:
    """A short ``repr`` of a user value for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= _SHOWN_CHARACTERS else f"{text[: _SHOWN_CHARACTERS - 3]}..."


def _kind(value: Any) -> str:
    """The JSON name of a value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


class _Problems:
    """Collects the cross-field rule violations of one model and raises them as one ``ValidationError``."""

    def __init__(self, owner: type[_ApiModel]) -> None:
        self.owner = owner
        self.errors: list[InitErrorDetails] = []

    def add(self, rule: str, loc: Loc, detail: str, value: Any = None) -> None:
        field = _body_path(self.owner.body_path, loc)
        self.errors.append(InitErrorDetails(type=_rule_error(rule, field, detail), loc=loc, input=value))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError.from_exception_data(self.owner.__name__, self.errors)


@dataclass(frozen=True, slots=True)
class _Check:
    """
    Field metadata: the rule a field belongs to, and the check that validates and normalises its raw value.

    The check runs before pydantic's own validation, so a wrong value or type fails with the rule's
    message. ``None`` means "not set" and passes, unless the field is required.
    """

    rule: str
    check: Callable[[Any], Any]
    required: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self._run, handler(source))

    def _run(self, value: Any) -> Any:
        if value is None:
            if self.required:
                raise _rule_error(self.rule, "", "required, got null")
            return None
        try:
            return self.check(value)
        except _Invalid as invalid:
            raise _rule_error(invalid.rule or self.rule, "", invalid.detail) from None


# -- field checks -----------------------------------------------------------------------------------------


def _text(max_length: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_kind(value)}")
        if len(value) > max_length:
            raise _Invalid(f"{len(value)} characters, at most {max_length}")
        return value

    return check


def _choice(enum: type[_E]) -> Callable[[Any], _E]:
    choices = ", ".join(repr(member.value) for member in enum)

    def check(value: Any) -> _E:
        if isinstance(value, enum):
            return value
        if isinstance(value, str):
            try:
                return enum(value)
            except ValueError:
                pass
        raise _Invalid(f"{_show(value)} is not one of {choices}")

    return check


def _whole_number(value: Any, unit: str = "") -> int:
    """Accept an int, an integral float or a string of digits (Jinja renders strings); return the int."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        return int(value)
    raise _Invalid(f"{_show(value)} is not a whole number{unit}")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Invalid(f"expected true or false, got {_show(value)}")


def _list(max_items: int | None = None, noun: str = "items") -> Callable[[Any], list[Any]]:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise _Invalid(f"expected a list, got {_kind(value)}")
        if max_items is not None and len(value) > max_items:
            raise _Invalid(f"{len(value)} {noun}, at most {max_items}")
        return list(value)

    return check


def _model_name(value: Any) -> str:
    if value != MODEL_NAME:
        raise _Invalid(f"{_show(value)} is not supported: this provider sends {MODEL_NAME!r}")
    return MODEL_NAME


def _duration(value: Any) -> int:
    seconds = _whole_number(value, " of seconds")
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise _Invalid(f"{_show(seconds)} s, must be {MIN_DURATION} to {MAX_DURATION}")
    return seconds


def _shot_index(value: Any) -> int:
    index = _whole_number(value)
    if index < 1:
        raise _Invalid(f"{_show(index)}, shots are numbered from 1")
    return index


def _shot_duration(value: Any) -> str:
    try:
        seconds = _whole_number(value, " of seconds")
    except _Invalid as invalid:
        raise _Invalid(f"{invalid.detail} (a string such as '2')") from None
    if seconds < 1:
        raise _Invalid(f"{_show(seconds)} s, a shot lasts at least 1 s")
    return str(seconds)


def _external_task_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    if len(value) > MAX_EXTERNAL_TASK_ID_LENGTH:
        raise _Invalid(f"{len(value)} characters, at most {MAX_EXTERNAL_TASK_ID_LENGTH}")
    return value


def _url_path_problem(url: str, extensions: tuple[str, ...], rule: str) -> None:
    """Check an ``http(s)://`` or ``s3://`` URL's form and its path's extension (R18, R21)."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise _Invalid(f"{_show(url)} is not a valid URL ({error})", rule) from None
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc or not parts.path.lstrip("/"):
            raise _Invalid(f"{_show(url)} is not an s3://bucket/key URL", rule)
        path = parts.path
    else:
        if not parts.hostname:
            raise _Invalid(f"{_show(url)} has no host", rule)
        path = unquote(parts.path)
    problem = media.extension_problem(path, extensions)
    if problem:
        raise _Invalid(problem, rule)


def _image_url(value: Any) -> str:
    """R18/R19: an ``http(s)://`` or ``s3://`` URL of a JPEG/PNG file, or a bare base64 JPEG/PNG image."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string (a URL or bare base64), got {_kind(value)}")
    if not value:
        raise _Invalid("must not be empty: an https:// or s3:// URL, or bare base64")
    scheme = _SCHEME.match(value)
    if scheme is not None:
        name = scheme.group(1).lower()
        if name == "data":
            raise _Invalid(
                "a data: URI is not accepted: send the bare base64 text, without the 'data:...;base64,' "
                "prefix",
                "R19",
            )
        if name not in ("http", "https", "s3"):
            raise _Invalid(
                f"URL scheme {name!r} is not supported: use https://, http://, s3:// or bare base64"
            )
        _url_path_problem(value, media.IMAGE_EXTENSIONS, "R18")
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _Invalid(
            f"neither an https://, http:// or s3:// URL nor valid bare base64 ({error})", "R19"
        ) from None
    try:
        info = media.read_image_info(data)
    except NeedMoreBytesError:
        raise _Invalid(f"the base64 image is truncated ({len(data)} bytes)") from None
    except MediaHeaderError as error:
        raise _Invalid(f"the base64 data is not a usable image: {error}") from None
    problems = media.check_image(info, len(data))
    if problems:
        raise _Invalid(f"the base64 {info.format.upper()} image is {'; '.join(problems)}")
    return value


def _video_url(value: Any) -> str:
    """R21: an ``http(s)://`` or ``s3://`` URL of an MP4/MOV file."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string (a URL), got {_kind(value)}")
    scheme = _SCHEME.match(value)
    if scheme is None or scheme.group(1).lower() not in ("http", "https", "s3"):
        raise _Invalid(f"{_show(value)} is not an https://, http:// or s3:// URL of an MP4 or MOV file")
    _url_path_problem(value, media.VIDEO_EXTENSIONS, "R21")
    return value


# -- enums ------------------------------------------------------------------------------------------------


class Mode(StrEnum):
    """``parameters.mode`` (R13): ``std`` renders 720p, ``pro`` 1080p (the API's default)."""

    STD = "std"
    PRO = "pro"


class AspectRatio(StrEnum):
    """``parameters.aspect_ratio`` (R4)."""

    LANDSCAPE_16_9 = "16:9"
    PORTRAIT_9_16 = "9:16"
    SQUARE_1_1 = "1:1"


class Sound(StrEnum):
    """``parameters.sound`` (R6)."""

    ON = "on"
    OFF = "off"


class ShotType(StrEnum):
    """``parameters.shot_type`` (R7)."""

    CUSTOMIZE = "customize"


class ImageType(StrEnum):
    """``image_list[].type``: the frame an image pins (R15, R16, R17)."""

    FIRST_FRAME = "first_frame"
    END_FRAME = "end_frame"


class ReferType(StrEnum):
    """``video_list[].refer_type`` (R22): ``base`` edits the video, ``feature`` uses it as a reference."""

    FEATURE = "feature"
    BASE = "base"


class KeepOriginalSound(StrEnum):
    """``video_list[].keep_original_sound`` (R22)."""

    YES = "yes"
    NO = "no"


# -- request models ---------------------------------------------------------------------------------------


class _ApiModel(BaseModel):
    """
    Base of the request models: unknown fields are errors (a typo must not be sent silently).

    Every error raised while validating a request model, by pydantic or by a rule, leaves it as a
    ``kling_rule`` error whose message starts with the rule ID (or ``spec``) and the field's body path.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: Where the model sits in the request body (the prefix of its fields' paths in messages).
    body_path: ClassVar[str] = ""

    @model_validator(mode="wrap")
    @classmethod
    def _name_rules(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as error:
            raise cls._rule_errors(error) from None

    @classmethod
    def _rule_errors(cls, error: ValidationError) -> ValidationError:
        details: list[InitErrorDetails] = []
        for item in error.errors(include_url=False):
            loc: Loc = tuple(item["loc"])
            if item["type"] == RULE_ERROR_TYPE:
                rule, detail = item["ctx"]["rule"], item["ctx"]["detail"]
            else:
                rule, detail = cls._explain(item["type"], loc, item["msg"], item["input"])
            error_type = _rule_error(rule, _body_path(cls.body_path, loc), detail)
            details.append(InitErrorDetails(type=error_type, loc=loc, input=item["input"]))
        return ValidationError.from_exception_data(cls.__name__, details)

    @classmethod
    def _explain(cls, error_type: str, loc: Loc, message: str, value: Any) -> tuple[str, str]:
        """Turn one of pydantic's own errors into ``(rule, detail)``."""
        allowed = list(cls.model_fields)
        if error_type == "extra_forbidden" and len(loc) == 1:
            guess = difflib.get_close_matches(str(loc[0]), allowed, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            return "spec", f"unknown field{hint}; the allowed fields are {', '.join(allowed)}"
        if error_type in ("model_type", "model_attributes_type", "dict_type") and not loc:
            return "spec", f"expected an object, got {_kind(value)}"
        rule = cls._field_rule(loc[0]) if loc and isinstance(loc[0], str) else None
        if error_type == "missing" and len(loc) == 1:
            return rule or "spec", "required"
        return rule or "spec", message

    @classmethod
    def _field_rule(cls, name: str) -> str | None:
        field = cls.model_fields.get(name)
        if field is None:
            return None
        return next((item.rule for item in field.metadata if isinstance(item, _Check)), None)


class Shot(_ApiModel):
    """
    One shot of a multi-shot video (``parameters.multi_prompt[]``, R8..R11).

    :param index: the shot's number: ``1, 2, 3...`` in list order.
    :param prompt: what happens in the shot, at most 512 characters (R9).
    :param duration: whole seconds, at least 1 (R10); ``2`` or ``"2"``, sent as the string ``"2"``.
    """

    body_path: ClassVar[str] = "parameters.multi_prompt[]"

    index: Annotated[int, _Check("spec", _shot_index, required=True)]
    prompt: Annotated[str, _Check("R9", _text(MAX_SHOT_PROMPT_LENGTH), required=True)]
    #: Whole seconds, sent as a **string** as the API documents.
    duration: Annotated[str, _Check("R10", _shot_duration, required=True)]


class ImageInput(_ApiModel):
    """
    One reference image (``parameters.image_list[]``).

    :param image_url: an ``https://``/``http://`` URL of a ``.jpg``/``.jpeg``/``.png`` file (a path without
        extension passes), an ``s3://bucket/key`` to resolve before submitting, or the bare base64 of a
        JPEG/PNG image, which is checked in full (R18, R19).
    :param type: ``first_frame`` or ``end_frame``; unset for a plain reference image (R15..R17).
    """

    body_path: ClassVar[str] = "parameters.image_list[]"

    image_url: Annotated[str, _Check("R18", _image_url, required=True)]
    type: Annotated[ImageType | None, _Check("R16", _choice(ImageType))] = None


class VideoInput(_ApiModel):
    """
    The reference video (``parameters.video_list[]``, R20..R22).

    :param video_url: an ``https://``/``http://`` URL of an ``.mp4``/``.mov`` file (a path without extension
        passes), or an ``s3://bucket/key`` to resolve before submitting (R21).
    :param refer_type: ``base`` (the video to edit, the API's default) or ``feature`` (R22).
    :param keep_original_sound: ``yes`` or ``no`` (R22).
    """

    body_path: ClassVar[str] = "parameters.video_list[]"

    video_url: Annotated[str, _Check("R21", _video_url, required=True)]
    refer_type: Annotated[ReferType | None, _Check("R22", _choice(ReferType))] = None
    keep_original_sound: Annotated[KeepOriginalSound | None, _Check("R22", _choice(KeepOriginalSound))] = None

    @property
    def effective_refer_type(self) -> ReferType:
        """``refer_type``, or the API's default ``base`` when it is not set (R22)."""
        return self.refer_type or ReferType.BASE


class KlingInput(_ApiModel):
    """
    The request's ``input`` object.

    :param prompt: the prompt, at most 2500 characters (R2); required unless ``multi_shot`` (R1). It may
        refer to inputs as ``<<<image_1>>>`` or ``<<<video_1>>>`` (R12).
    :param negative_prompt: what to avoid, at most 2500 characters (R2).
    """

    body_path: ClassVar[str] = "input"

    prompt: Annotated[str | None, _Check("R2", _text(MAX_PROMPT_LENGTH))] = None
    negative_prompt: Annotated[str | None, _Check("R2", _text(MAX_PROMPT_LENGTH))] = None


class KlingParameters(_ApiModel):
    """
    The request's ``parameters`` object. ``None`` means "not set": the API's default applies.

    :param mode: ``std`` (720p) or ``pro`` (1080p, the default) (R13).
    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1``; required unless editing a video (R4).
    :param duration: seconds, 3 to 15 (3 to 10 with a reference video), default 5 (R5).
    :param sound: ``on`` or ``off`` (the default); ``off`` with a reference video (R6).
    :param multi_shot: multi-shot mode (R1, R3, R7, R8).
    :param shot_type: ``customize``, required with ``multi_shot`` (R7).
    :param multi_prompt: the shots, 1 to 6, whose durations add up to ``duration`` (R8..R11).
    :param image_list: reference images (R14..R19).
    :param video_list: at most one reference video (R20..R22).
    :param watermark_enabled: whether the result carries the vendor's watermark.
    :param external_task_id: your own id for the task, unique per user; at most 64 characters.
    """

    body_path: ClassVar[str] = "parameters"

    mode: Annotated[Mode | None, _Check("R13", _choice(Mode))] = None
    aspect_ratio: Annotated[AspectRatio | None, _Check("R4", _choice(AspectRatio))] = None
    duration: Annotated[int | None, _Check("R5", _duration)] = None
    sound: Annotated[Sound | None, _Check("R6", _choice(Sound))] = None
    multi_shot: Annotated[bool | None, _Check("R3", _flag)] = None
    shot_type: Annotated[ShotType | None, _Check("R7", _choice(ShotType))] = None
    multi_prompt: Annotated[list[Shot] | None, _Check("R8", _list())] = None
    image_list: Annotated[list[ImageInput] | None, _Check("R14", _list())] = None
    video_list: Annotated[list[VideoInput] | None, _Check("R20", _list(MAX_VIDEOS, "videos"))] = None
    watermark_enabled: Annotated[bool | None, _Check("spec", _flag)] = None
    external_task_id: Annotated[str | None, _Check("spec", _external_task_id)] = None

    @property
    def has_reference_video(self) -> bool:
        """Whether a video is given (``feature`` or ``base``)."""
        return bool(self.video_list)

    @property
    def is_video_edit(self) -> bool:
        """Whether a video is given to edit: ``refer_type`` ``base``, or unset (R22's default)."""
        return any(video.effective_refer_type is ReferType.BASE for video in self.video_list or ())

    @property
    def total_duration(self) -> int:
        """``duration``, or the API's default of 5 s: the total the shots must add up to (R11)."""
        return DEFAULT_DURATION if self.duration is None else self.duration

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        problems = _Problems(type(self))
        self._check_format(problems)
        self._check_shots(problems)
        self._check_images(problems)
        problems.raise_if_any()
        return self

    def _check_format(self, problems: _Problems) -> None:
        """R4, R5, R6, R7: format, length and sound, given the reference video."""
        if self.aspect_ratio is None and not self.is_video_edit:
            problems.add(
                "R4",
                ("aspect_ratio",),
                "required, one of '16:9', '9:16', '1:1' (only a refer_type 'base' video, i.e. video editing, "
                "may leave it out)",
            )
        if self.has_reference_video and self.duration is not None and self.duration > MAX_DURATION_WITH_VIDEO:
            problems.add(
                "R5",
                ("duration",),
                f"{self.duration} s, at most {MAX_DURATION_WITH_VIDEO} s with a reference video",
                self.duration,
            )
        elif self.is_video_edit and self.duration is not None:
            _warn_ignored(
                "R5 parameters.duration has no effect with a refer_type 'base' video (video editing): "
                "the output takes the input video's length"
            )
        if self.has_reference_video and self.sound is Sound.ON:
            problems.add("R6", ("sound",), "must be 'off' with a reference video", self.sound.value)
        if self.multi_shot and self.shot_type is None:
            problems.add("R7", ("shot_type",), "required when multi_shot is true: 'customize'")

    def _check_shots(self, problems: _Problems) -> None:
        """R8, R10, R11 and the shot order, when the shots are used (``multi_shot`` with ``customize``)."""
        if not (self.multi_shot and self.shot_type is ShotType.CUSTOMIZE):
            return
        shots = self.multi_prompt or []
        if not 1 <= len(shots) <= MAX_SHOTS:
            problems.add(
                "R8",
                ("multi_prompt",),
                f"{len(shots)} shots, must be 1 to {MAX_SHOTS} when multi_shot is true",
                len(shots),
            )
        total = self.total_duration
        for position, shot in enumerate(shots):
            if shot.index != position + 1:
                problems.add(
                    "spec",
                    ("multi_prompt", position, "index"),
                    f"{shot.index}, expected {position + 1}: shots are numbered 1, 2, 3... in list order",
                    shot.index,
                )
            if int(shot.duration) > total:
                problems.add(
                    "R10",
                    ("multi_prompt", position, "duration"),
                    f"{shot.duration} s, more than the total duration of {total} s",
                    shot.duration,
                )
        added = sum(int(shot.duration) for shot in shots)
        if shots and added != total:
            default = "" if self.duration is not None else " (the default)"
            problems.add(
                "R11",
                ("multi_prompt",),
                f"shot durations add up to {added} s, but duration is {total} s{default}",
                added,
            )

    def _check_images(self, problems: _Problems) -> None:
        """R14..R17 and the frame types."""
        images = self.image_list or []
        limit = MAX_IMAGES_WITH_VIDEO if self.has_reference_video else MAX_IMAGES
        if len(images) > limit:
            context = " with a reference video" if self.has_reference_video else ""
            problems.add(
                "R14", ("image_list",), f"{len(images)} images, at most {limit}{context}", len(images)
            )
        first = [position for position, image in enumerate(images) if image.type is ImageType.FIRST_FRAME]
        end = [position for position, image in enumerate(images) if image.type is ImageType.END_FRAME]
        if end and len(images) > MAX_IMAGES_WITH_END_FRAME:
            problems.add(
                "R15",
                ("image_list", end[0], "type"),
                f"'end_frame' is not supported with more than {MAX_IMAGES_WITH_END_FRAME} images "
                f"({len(images)} given)",
                "end_frame",
            )
        if end and not first:
            problems.add(
                "R16",
                ("image_list", end[0], "type"),
                "an 'end_frame' needs a 'first_frame' image",
                "end_frame",
            )
        if self.is_video_edit:
            for position in first + end:
                problems.add(
                    "R17",
                    ("image_list", position, "type"),
                    "no first or end frame may be set with a refer_type 'base' video (video editing)",
                    images[position].type,
                )
        for positions, name in ((first, "first_frame"), (end, "end_frame")):
            for position in positions[1:]:
                problems.add("spec", ("image_list", position, "type"), f"more than one {name!r} image", name)


class KlingVideoRequest(_ApiModel):
    """
    A submit request body for Kling V3 Omni: ``{"model", "input": {...}, "parameters": {...}}``.

    Build it from a documented body with ``KlingVideoRequest.model_validate(body)`` or from keyword
    arguments with :meth:`build`; send :meth:`to_api_body`. Either raises ``pydantic.ValidationError``
    whose every message starts with a rule ID and names the field (see the module's docstring).

    :param model: always ``kling-v3-omni``.
    :param input: the prompts.
    :param parameters: everything else.
    """

    model: Annotated[Literal["kling-v3-omni"], _Check("spec", _model_name)] = MODEL_NAME
    input: KlingInput | None = None
    parameters: KlingParameters = Field(default_factory=KlingParameters)

    @model_validator(mode="after")
    def _check_prompts(self) -> Self:
        """R1, R3 and R12: the prompts against ``multi_shot`` and the inputs they refer to."""
        problems = _Problems(type(self))
        parameters = self.parameters
        prompt = self.input.prompt if self.input else None
        if not parameters.multi_shot and not (prompt and prompt.strip()):
            problems.add(
                "R1",
                ("input", "prompt"),
                "required and not blank when multi_shot is false",
                prompt,
            )
        if parameters.multi_shot and prompt:
            _warn_ignored(
                "R3 input.prompt is ignored when multi_shot is true: put the prompts in "
                "parameters.multi_prompt"
            )
        if not parameters.multi_shot:
            ignored = [
                name for name in ("shot_type", "multi_prompt") if getattr(parameters, name) is not None
            ]
            if ignored:
                _warn_ignored(
                    f"R3 parameters.{' and parameters.'.join(ignored)} "
                    f"{'are' if len(ignored) > 1 else 'is'} ignored when multi_shot is not true"
                )
        self._check_references(problems)
        problems.raise_if_any()
        return self

    def _check_references(self, problems: _Problems) -> None:
        """R12: ``<<<image_N>>>`` needs N images, ``<<<video_N>>>`` N videos."""
        parameters = self.parameters
        available = {"image": len(parameters.image_list or ()), "video": len(parameters.video_list or ())}
        texts: list[tuple[Loc, str | None]] = []
        if self.input is not None:
            texts += [
                (("input", "prompt"), self.input.prompt),
                (("input", "negative_prompt"), self.input.negative_prompt),
            ]
        for position, shot in enumerate(parameters.multi_prompt or ()):
            texts.append((("parameters", "multi_prompt", position, "prompt"), shot.prompt))
        for loc, text in texts:
            seen: set[str] = set()
            for match in _REFERENCE.finditer(text or ""):
                digits = match.group(2)
                kind, number = match.group(1), int(digits) if len(digits) <= 9 else 10**9
                if match.group(0) in seen or 1 <= number <= available[kind]:
                    continue
                seen.add(match.group(0))
                count = available[kind]
                have = (
                    f"{kind}_list has {count} {kind}{'' if count == 1 else 's'}"
                    if count
                    else f"no {kind}_list"
                )
                detail = (
                    f"{match.group(0)} refers to {kind} {number}, but {have}"
                    if number >= 1
                    else f"{match.group(0)}: {kind}s are numbered from 1"
                )
                problems.add("R12", loc, detail, match.group(0))

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        mode: Mode | str | None = None,
        aspect_ratio: AspectRatio | str | None = None,
        duration: int | str | None = None,
        sound: Sound | str | None = None,
        multi_shot: bool | str | None = None,
        shot_type: ShotType | str | None = None,
        multi_prompt: Sequence[Shot | Mapping[str, Any]] | None = None,
        image_list: Sequence[ImageInput | Mapping[str, Any]] | None = None,
        video_list: Sequence[VideoInput | Mapping[str, Any]] | None = None,
        watermark_enabled: bool | str | None = None,
        external_task_id: str | None = None,
    ) -> KlingVideoRequest:
        """
        Build a request from the operators' keyword arguments, with the same validation as a body.

        Enums or their string values, ints or numeric strings (as Jinja renders them) for durations, and
        models or dicts for list items are all accepted. A shot given as a dict without ``index`` is
        numbered by its position (1, 2, 3...). ``None`` leaves a field unset.

        :param prompt: ``input.prompt`` (R1, R2, R12).
        :param negative_prompt: ``input.negative_prompt`` (R2, R12).
        :param mode: ``std`` or ``pro`` (R13).
        :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1`` (R4).
        :param duration: total seconds, 3 to 15 (R5).
        :param sound: ``on`` or ``off`` (R6).
        :param multi_shot: multi-shot mode (R3).
        :param shot_type: ``customize`` (R7).
        :param multi_prompt: the shots (R8..R11).
        :param image_list: reference images (R14..R19).
        :param video_list: the reference video (R20..R22).
        :param watermark_enabled: whether to watermark the result.
        :param external_task_id: your own unique id for the task.
        :raises pydantic.ValidationError: a rule is broken; every message starts with its rule ID.
        """
        given: dict[str, Any] = {
            "mode": mode,
            "aspect_ratio": aspect_ratio,
            "duration": duration,
            "sound": sound,
            "multi_shot": multi_shot,
            "shot_type": shot_type,
            "multi_prompt": _numbered_shots(multi_prompt),
            "image_list": _plain_items(image_list),
            "video_list": _plain_items(video_list),
            "watermark_enabled": watermark_enabled,
            "external_task_id": external_task_id,
        }
        body: dict[str, Any] = {
            "model": MODEL_NAME,
            "parameters": {name: value for name, value in given.items() if value is not None},
        }
        texts = {"prompt": prompt, "negative_prompt": negative_prompt}
        if any(value is not None for value in texts.values()):
            body["input"] = {name: value for name, value in texts.items() if value is not None}
        return cls.model_validate(body)

    def with_external_task_id(self, external_task_id: str) -> KlingVideoRequest:
        """
        Return a validated copy of the request with ``parameters.external_task_id`` set.

        :param external_task_id: your own unique id for the task (at most 64 characters).
        :raises pydantic.ValidationError: the id is empty or too long.
        """
        parameters = self.parameters.model_copy(deep=True)
        try:
            parameters.external_task_id = external_task_id  # validate_assignment runs the field's check
        except ValidationError as error:
            # Report it at its place in the body, as model_validate would.
            details = [
                InitErrorDetails(
                    type=_rule_error(item["ctx"]["rule"], item["ctx"]["field"], item["ctx"]["detail"]),
                    loc=("parameters", *item["loc"]),
                    input=item["input"],
                )
                for item in error.errors(include_url=False)
            ]
            raise ValidationError.from_exception_data(type(self).__name__, details) from None
        return self.model_copy(update={"parameters": parameters}, deep=True)

    def with_input_urls(self, replacements: Mapping[str, str]) -> KlingVideoRequest:
        """
        Return a validated copy with some input URLs replaced, e.g. ``s3://`` inputs by what they resolve to.

        :param replacements: body path (a key of :attr:`s3_input_urls`, such as
            ``parameters.image_list[0].image_url``) to the new URL or bare base64.
        :raises KeyError: a path is not an input URL of this request.
        :raises pydantic.ValidationError: a new value breaks a rule (R18, R19, R21).
        """
        body = self.to_api_body()
        parameters = body["parameters"]
        slots = {
            f"parameters.{list_name}[{position}].{key}": item
            for list_name, key in (("image_list", "image_url"), ("video_list", "video_url"))
            for position, item in enumerate(parameters.get(list_name, ()))
        }
        for path, url in replacements.items():
            if path not in slots:
                raise KeyError(
                    f"{path} is not an input URL of this request; known: {', '.join(slots) or 'none'}"
                )
            key = "image_url" if path.endswith(".image_url") else "video_url"
            slots[path][key] = url
        return type(self).model_validate(body)

    # -- what other parts need ----------------------------------------------------------------------------

    @property
    def has_reference_video(self) -> bool:
        """Whether a video is given (R5, R6, R14 change with it)."""
        return self.parameters.has_reference_video

    @property
    def is_video_edit(self) -> bool:
        """Whether the request edits a video (a ``refer_type`` ``base`` video, R22's default)."""
        return self.parameters.is_video_edit

    @property
    def effective_duration(self) -> int | None:
        """The output's length in seconds: ``duration`` or the default 5; ``None`` when editing a video."""
        return None if self.is_video_edit else self.parameters.total_duration

    @property
    def s3_input_urls(self) -> dict[str, str]:
        """
        The inputs that are still ``s3://`` URLs, by body path (``parameters.image_list[0].image_url``).

        The API cannot read them: resolve them (:meth:`with_input_urls`) before submitting.
        """
        found: dict[str, str] = {}
        for position, image in enumerate(self.parameters.image_list or ()):
            if _is_s3(image.image_url):
                found[f"parameters.image_list[{position}].image_url"] = image.image_url
        for position, video in enumerate(self.parameters.video_list or ()):
            if _is_s3(video.video_url):
                found[f"parameters.video_list[{position}].video_url"] = video.video_url
        return found

    @property
    def has_s3_inputs(self) -> bool:
        """Whether an input is still an ``s3://`` URL (see :attr:`s3_input_urls`)."""
        return bool(self.s3_input_urls)

    def to_api_body(self) -> dict[str, Any]:
        """Return the JSON body to send: fields left unset are not sent, ``model`` always is."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["model"] = self.model
        return body


def _is_s3(url: str) -> bool:
    return url[:5].lower() == "s3://"


def _plain_items(items: Sequence[BaseModel | Mapping[str, Any]] | None) -> Any:
    """List items as models or plain dicts (a ``Mapping`` becomes a ``dict``); anything else unchanged."""
    if not isinstance(items, list | tuple):
        return items
    return [dict(item) if isinstance(item, Mapping) else item for item in items]


def _numbered_shots(shots: Sequence[Shot | Mapping[str, Any]] | None) -> Any:
    """Number the dict shots that have no ``index`` by their position."""
    items = _plain_items(shots)
    if not isinstance(items, list):
        return items
    return [
        {"index": position + 1, **item} if isinstance(item, dict) and "index" not in item else item
        for position, item in enumerate(items)
    ]


# -- responses --------------------------------------------------------------------------------------------
#
# A status answer is read whenever its load-bearing fields are: ``output.task_id`` (a valid id),
# ``output.task_status`` (any text; see TaskStatus) and ``output.urls`` (absent, null or a list of http(s)
# URLs). Every other field is informational: whatever JSON it holds is coerced or dropped, never an error,
# so that a finished, paid task is never unreadable over a field nobody needs.

#: Longest Kling task id (a provider rule: the API documents no limit).
MAX_KLING_TASK_ID_LENGTH: Final = 128
#: A Kling task id, to be matched with ``fullmatch``: 1 to 128 ASCII letters, digits, ``_`` and ``-``, not
#: starting with ``-`` (a provider rule: the API only says "string"). Every id seen matches (the spec's
#: ``task_id``, the simulator's 32 hex digits, UUIDs, Kling's numeric ids); a path separator, a dot,
#: whitespace, a control or a non-ASCII character never does, so an id is safe in an S3 key, a URL, a
#: header and a log line.
KLING_TASK_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_-]{{0,{MAX_KLING_TASK_ID_LENGTH - 1}}}")
#: Longest ``output.error_message`` kept, in characters; a longer one is cut and ends with ``...``.
MAX_ERROR_MESSAGE_LENGTH: Final = 2000
#: Longest ``request_id`` kept, in characters; a longer one is cut and ends with ``...``.
MAX_REQUEST_ID_LENGTH: Final = 256
#: Longest result URL, in characters: a longer one is refused (no HTTP server reads such a request line).
MAX_RESULT_URL_LENGTH: Final = 16_384

_TASK_ID_RULE: Final = (
    f"a Kling task id is 1 to {MAX_KLING_TASK_ID_LENGTH} ASCII letters, digits, '_' and '-', "
    "not starting with '-'"
)
#: The last second of the year 9999: a later ``submit_time``/``finish_time`` is absurd (or milliseconds).
_LATEST_UNIX_TIME: Final = 253_402_300_799
#: The largest integer every JSON reader (JavaScript's, in the Airflow UI) holds exactly.
_LARGEST_SAFE_INTEGER: Final = 2**53 - 1
#: A number as text: ASCII digits, an optional fraction and exponent; no ``nan``, ``inf`` or ``1_000``.
_NUMBER_TEXT = re.compile(
    r"\s*[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?\s*"
)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: NUL and the surrogates (in a ``str``, a surrogate is always a lone one): see :func:`_storable`.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_RESULT_URL_SCHEMES: Final = frozenset({"http", "https"})


class TaskStatus(StrEnum):
    """
    ``output.task_status`` of a task.

    A status the API adds later (say ``Expired``) does not break parsing: it becomes a pseudo-member that
    keeps the server's text, is not terminal, and is logged as a warning each time it is parsed, so
    callers keep polling within their own timeout.
    """

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        if not isinstance(value, str) or not value:
            return None
        for member in cls:
            if member.value.lower() == value.lower():
                return member
        log.warning("Unknown Kling task status %s: treating it as still in progress", _show_text(value))
        pseudo = str.__new__(cls, value)
        pseudo._name_ = value.upper()
        pseudo._value_ = value
        return pseudo

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished (``Success`` or ``Failure``); unknown statuses are not terminal."""
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


def check_kling_task_id(value: object, *, field: str = "kling_task_id") -> str:
    """
    Return ``value`` if it is a valid Kling task id (:data:`KLING_TASK_ID_PATTERN`), else raise.

    Use it wherever an id enters: an API answer, an operator's or sensor's argument, a trigger's kwargs. A
    valid id holds no path separator, dot, whitespace, control or non-ASCII character.

    :param value: the id to check.
    :param field: what the id is, for the message (e.g. ``kling_task_id`` or ``output.task_id``).
    :raises ValueError: ``value`` is not a string, or not a valid id; the message names ``field``, shows
        the value (escaped and cut) and says what is allowed, on one line.
    """
    if isinstance(value, str) and KLING_TASK_ID_PATTERN.fullmatch(value):
        return value
    raise ValueError(f"{field}: {_task_id_problem(value)}")


def _task_id_problem(value: object) -> str:
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}; {_TASK_ID_RULE}"
    return f"{_show_text(value)} is not a valid Kling task id; {_TASK_ID_RULE}"


def _show_text(value: str) -> str:
    """:func:`_show` of a string of any length, without building the ``repr`` of all of it."""
    return _show(value[: _SHOWN_CHARACTERS + 1])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _api_task_id(value: Any) -> str:
    """``output.task_id``: a valid id; a JSON integer (a numeric id) is read as its decimal text."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_KLING_TASK_ID_LENGTH:
        value = str(value)
    if isinstance(value, str) and KLING_TASK_ID_PATTERN.fullmatch(value):
        return value
    raise _rule_error("spec", "output.task_id", _task_id_problem(value))


def _task_status(value: Any) -> TaskStatus:
    """``output.task_status``: any non-empty text (an unknown status is kept, see :class:`TaskStatus`)."""
    if isinstance(value, TaskStatus):
        return value
    if isinstance(value, str) and value:
        return TaskStatus(value)
    got = "an empty string" if isinstance(value, str) else _kind(value)
    raise _rule_error("spec", "output.task_status", f"expected a status, got {got}")


def _result_urls(value: Any) -> list[str]:
    """``output.urls``: absent or null is no URL; anything but a list of http(s) URLs is an error."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _rule_error("spec", "output.urls", f"expected a list of URLs, got {_kind(value)}")
    for position, url in enumerate(value):
        problem = _result_url_problem(url)
        if problem is not None:
            raise _rule_error("spec", f"output.urls[{position}]", problem)
    return list(value)


def _result_url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return f"expected a string, got {_kind(url)}"
    if len(url) > MAX_RESULT_URL_LENGTH:
        return f"{len(url)} characters, at most {MAX_RESULT_URL_LENGTH}"
    if _CONTROL_CHARACTER.search(url):
        return f"{_show(url)} holds a control character"
    if url != url.strip():
        return f"{_show(url)} starts or ends with whitespace"
    try:
        url.encode("utf-8")
    except UnicodeError:
        return f"{_show(url)} is not valid Unicode"
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in _RESULT_URL_SCHEMES and bool(parts.hostname)
    except ValueError:  # a broken IPv6 host, say
        usable = False
    return None if usable else f"{_show(url)} is not an http(s) URL"


def _finite_number(value: Any) -> int | float | None:
    """A JSON number or numeric text as an ``int`` when integral, else a finite ``float``; else ``None``."""
    if isinstance(value, str):
        if len(value) > 64 or not _NUMBER_TEXT.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def _unix_time(value: Any) -> int | float | None:
    """``submit_time``/``finish_time``: Unix seconds after 1970 and before the year 10000, else ``None``."""
    number = _finite_number(value)
    return number if number is not None and 0 < number <= _LATEST_UNIX_TIME else None


def _usage_seconds(value: Any) -> int | float | None:
    """``usage.duration``: non-negative seconds a JSON reader holds exactly, else ``None``."""
    number = _finite_number(value)
    return number if number is not None and 0 <= number <= _LARGEST_SAFE_INTEGER else None


def _request_id(value: Any) -> str | None:
    """``request_id``: text, or a number as text, cut; ``None`` for empty text and anything else."""
    text: str | None = None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if abs(value) < 10**MAX_REQUEST_ID_LENGTH else None
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    return _storable(_cut(text, MAX_REQUEST_ID_LENGTH)) if text else None


def _error_message(value: Any) -> str | None:
    """``output.error_message``: text as is, anything else as compact JSON text, cut; ``None`` when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError):
            text = f"<{_kind(value)} too large or too deep to show>"
    return _storable(_cut(text, MAX_ERROR_MESSAGE_LENGTH)) if text else None


def _storable(text: str) -> str:
    """
    ``text`` with each NUL and lone surrogate replaced by U+FFFD.

    A JSON body may hold both (as escapes), but neither can be encoded as UTF-8 or stored in a PostgreSQL
    ``json`` column (a trigger event, an XCom).
    """
    return _UNSTORABLE.sub("\ufffd", text)


_ApiTaskId = Annotated[str, BeforeValidator(_api_task_id)]
_ApiTaskStatus = Annotated[TaskStatus, BeforeValidator(_task_status)]
_ResultUrls = Annotated[list[str], BeforeValidator(_result_urls)]
_UnixTime = Annotated[int | float | None, BeforeValidator(_unix_time)]
_UsageSeconds = Annotated[int | float | None, BeforeValidator(_usage_seconds)]
_RequestId = Annotated[str | None, BeforeValidator(_request_id)]
_ErrorMessage = Annotated[str | None, BeforeValidator(_error_message)]


class _ResponseModel(BaseModel):
    """Base of the response models: fields the API adds later are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty dict (response bodies are untrusted)."""
    return value if isinstance(value, dict) else {}


class KlingSubmitResult(_ResponseModel):
    """
    The submit response: ``{"output": {"task_id": ...}, "request_id": ...}``.

    Only ``output.task_id`` can make the answer unusable; ``request_id`` of any JSON type is read as text
    or dropped.

    :param task_id: the new task's id: a valid id (:func:`check_kling_task_id`); a JSON integer is read as
        its decimal text.
    :param request_id: the submit request's id: text, a number as text, or ``None`` (empty, or any other
        JSON type); at most :data:`MAX_REQUEST_ID_LENGTH` characters.
    """

    task_id: _ApiTaskId
    request_id: _RequestId = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingSubmitResult:
        """
        Parse the API's submit response body.

        :param payload: the decoded JSON body, of any type.
        :raises pydantic.ValidationError: the body holds no valid task id (nothing else is raised).
        """
        body = _as_dict(payload)
        output = _as_dict(body.get("output"))
        return cls.model_validate({"task_id": output.get("task_id"), "request_id": body.get("request_id")})


class KlingTask(_ResponseModel):
    """
    A task as the status endpoint reports it.

    Only ``task_id``, ``status`` and ``urls`` can make an answer unusable; every other field of any JSON
    type is coerced or dropped (``None``), so a finished task is always read.

    :param task_id: the API's task id (``output.task_id``): a valid id (:func:`check_kling_task_id`); a JSON
        integer is read as its decimal text.
    :param status: ``output.task_status``; an unknown status is kept, and is not terminal.
    :param urls: the result video URLs (on ``Success``), exactly as sent; temporary, copy them promptly.
        Each is an http(s) URL; a missing or null ``urls`` is ``[]``, anything else is an error.
    :param error_message: the vendor's message (on ``Failure``): text as sent, or anything else as compact
        JSON text; at most :data:`MAX_ERROR_MESSAGE_LENGTH` characters; ``None`` when missing or empty.
    :param submit_time: Unix seconds: an ``int`` when whole, else a ``float``; ``None`` when missing or not a
        finite number in 1970..9999 (numeric text is read).
    :param finish_time: Unix seconds, as ``submit_time``.
    :param usage_seconds: billed video seconds (``usage.duration``): an ``int`` when whole, else a
        ``float``; ``None`` when missing or not a finite non-negative number.
    :param request_id: the status request's id: text, a number as text, or ``None``; at most
        :data:`MAX_REQUEST_ID_LENGTH` characters.
    """

    task_id: _ApiTaskId
    status: _ApiTaskStatus
    urls: _ResultUrls = Field(default_factory=list)
    error_message: _ErrorMessage = None
    submit_time: _UnixTime = None
    finish_time: _UnixTime = None
    usage_seconds: _UsageSeconds = None
    request_id: _RequestId = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingTask:
        """
        Parse the API's status response body (``{"output": {...}, "usage": {...}, "request_id"}``).

        :param payload: the decoded JSON body, of any type.
        :raises pydantic.ValidationError: a load-bearing field (``output.task_id``, ``output.task_status``,
            ``output.urls``) is missing or unusable (nothing else is raised).
        """
        body = _as_dict(payload)
        output = _as_dict(body.get("output"))
        usage = _as_dict(body.get("usage"))
        return cls.model_validate(
            {
                "task_id": output.get("task_id"),
                "status": output.get("task_status"),
                "urls": output.get("urls"),
                "error_message": output.get("error_message"),
                "submit_time": output.get("submit_time"),
                "finish_time": output.get("finish_time"),
                "usage_seconds": usage.get("duration"),
                "request_id": body.get("request_id"),
            }
        )

    def as_result(self) -> dict[str, Any]:
        """
        Return the finished-task dict that operators and sensors push to XCom.

        It holds ids, the status, result URLs and numbers only (``usage_seconds``, ``submit_time`` and
        ``finish_time`` are ``int``, ``float`` or ``None``, always finite): never a secret, never the whole
        response, and always strict JSON.
        """
        return {
            "kling_task_id": self.task_id,
            "status": self.status.value,
            "urls": list(self.urls),
            "usage_seconds": self.usage_seconds,
            "submit_time": self.submit_time,
            "finish_time": self.finish_time,
        }
