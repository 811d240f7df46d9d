"""
The request models: :class:`KlingVideoRequest` and its parts, with the rules that span several fields.

The one-field rules are in :mod:`.rules` and :mod:`._media_rules`, attached to each field with
:class:`~.rules._Check`; the rules across fields (R1, R3..R8, R10..R12, R14..R17) are the models'
validators here. See :mod:`.rules` for the message format and the decisions where the spec is silent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from airflow_provider_kling.constants import MODEL_NAME
from airflow_provider_kling.models._media_rules import _image_url, _video_url
from airflow_provider_kling.models.rules import (
    DEFAULT_DURATION,
    MAX_DURATION_WITH_VIDEO,
    MAX_IMAGES,
    MAX_IMAGES_WITH_END_FRAME,
    MAX_IMAGES_WITH_VIDEO,
    MAX_PROMPT_LENGTH,
    MAX_SHOT_PROMPT_LENGTH,
    MAX_SHOTS,
    MAX_VIDEOS,
    AspectRatio,
    ImageType,
    KeepOriginalSound,
    Loc,
    Mode,
    ReferType,
    ShotType,
    Sound,
    _ApiModel,
    _Check,
    _choice,
    _duration,
    _external_task_id,
    _flag,
    _list,
    _model_name,
    _Problems,
    _rule_error,
    _shot_duration,
    _shot_index,
    _text,
    _warn_ignored,
)

_REFERENCE = re.compile(r"<<<(image|video)_(\d+)>>>")


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
