"""
Request rules R1..R22: the limits, the rule errors, the one-field checks, the value sets, the model base.

Every rule of ``shared/spec/kling-v3-omni-api.md`` that can be checked without downloading a file lives
once in this package (the one-field checks here and in :mod:`._media_rules`, the checks across fields in
the validators of :mod:`.request`), and its error message starts with the rule ID and names the field by
its path in the request body (list items zero-based), for example::

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
:attr:`.request.KlingVideoRequest.s3_input_urls`); they must be resolved before a submit.
"""

from __future__ import annotations

import difflib
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar, Final, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

from airflow_provider_kling.constants import MODEL_NAME

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
#: The ``type`` of every error this package raises: ``err["msg"]`` is ``"<rule> <field>: <detail>"``.
RULE_ERROR_TYPE: Final = "kling_rule"

_RULE_TEMPLATE: Final = "{rule} {field}: {detail}"
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
    """
    Warn with :class:`KlingIgnoredFieldWarning`, attributed to the code that built the request.

    The frames to skip are found by walking the stack, not given as a fixed ``stacklevel``, because their
    number depends on the entry point: the caller of ``KlingVideoRequest.model_validate`` is 5 frames above
    a warning of :class:`~.request.KlingParameters` (its two checks, the request's wrap validator, pydantic's
    ``model_validate``), the caller of ``KlingParameters.model_validate`` 4, and ``build``, ``with_*`` and an
    assignment (``validate_assignment``: pydantic's ``__setattr__`` and a lambda) add frames of their own.
    So this skips every frame of this package and of pydantic and warns at the first frame outside them.
    Python 3.12's ``warnings.warn(skip_file_prefixes=...)`` would do the same, but the provider supports
    Python 3.11.

    :param message: the warning's text, starting with the rule ID and the field.
    """
    if not _ignored_field_warnings.get():
        return
    frame = sys._getframe(1)
    level = 2
    # Skip this package's and pydantic's frames (validation runs several frames deep).
    while frame.f_back is not None and _is_validation_frame(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, KlingIgnoredFieldWarning, stacklevel=level)


#: The package whose frames :func:`_warn_ignored` skips: ``airflow_provider_kling.models``.
_MODELS_PACKAGE: Final = __name__.rpartition(".")[0]


def _is_validation_frame(module: str) -> bool:
    return (
        module == _MODELS_PACKAGE
        or module.startswith(f"{_MODELS_PACKAGE}.")
        or module == "pydantic"
        or module.startswith("pydantic.")
    )


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


# -- the base of the request models -----------------------------------------------------------------------


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
