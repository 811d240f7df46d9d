"""
Pydantic models of the Kling V3 Omni task API: the one home of every API rule (R1..R22).

Every rule of ``shared/spec/kling-v3-omni-api.md`` that can be checked without downloading a file lives
here, once, and its error message starts with the rule ID and names the field, for example
``R11 parameters.multi_prompt: shot durations add up to 4 s, but duration is 5 s``.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_provider_kling.constants import MODEL_NAME

log = logging.getLogger(__name__)


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


class _ApiModel(BaseModel):
    """Base of the request models: unknown fields are errors (a typo must not be sent silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Shot(_ApiModel):
    """One shot of a multi-shot video (``parameters.multi_prompt[]``)."""

    index: int
    prompt: str
    #: Whole seconds, sent as a **string** as the API documents.
    duration: str


class ImageInput(_ApiModel):
    """One reference image (``parameters.image_list[]``): an HTTP(S) URL or bare base64 (R18, R19)."""

    image_url: str
    type: ImageType | None = None


class VideoInput(_ApiModel):
    """The reference video (``parameters.video_list[]``, R20..R22)."""

    video_url: str
    refer_type: ReferType | None = None
    keep_original_sound: KeepOriginalSound | None = None


class KlingInput(_ApiModel):
    """The request's ``input`` object."""

    prompt: str | None = None
    negative_prompt: str | None = None


class KlingParameters(_ApiModel):
    """The request's ``parameters`` object. ``None`` means "not set": the API's default applies."""

    mode: Mode | None = None
    aspect_ratio: AspectRatio | None = None
    duration: int | None = None
    sound: Sound | None = None
    multi_shot: bool | None = None
    shot_type: ShotType | None = None
    multi_prompt: list[Shot] | None = None
    image_list: list[ImageInput] | None = None
    video_list: list[VideoInput] | None = None
    watermark_enabled: bool | None = None
    external_task_id: str | None = None


class KlingVideoRequest(_ApiModel):
    """
    A submit request body for Kling V3 Omni: ``{"model", "input": {...}, "parameters": {...}}``.

    Build it from a documented body with ``KlingVideoRequest.model_validate(body)`` or from keyword
    arguments with :meth:`build`; send :meth:`to_api_body`.
    """

    model: Literal["kling-v3-omni"] = MODEL_NAME
    input: KlingInput | None = None
    parameters: KlingParameters = Field(default_factory=KlingParameters)

    def to_api_body(self) -> dict[str, Any]:
        """Return the JSON body to send: fields left unset are not sent, ``model`` always is."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["model"] = self.model
        return body


class TaskStatus(StrEnum):
    """
    ``output.task_status`` of a task.

    A status the API adds later (say ``Expired``) does not break parsing: it becomes a pseudo-member that
    keeps the server's text, is not terminal, and is logged once as a warning, so callers keep polling
    within their own timeout.
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
        log.warning("Unknown Kling task status %r: treating it as still in progress", value)
        pseudo = str.__new__(cls, value)
        pseudo._name_ = value.upper()
        pseudo._value_ = value
        return pseudo

    @property
    def is_known(self) -> bool:
        """Whether the status is one of the four the API documents."""
        return self._name_ in type(self).__members__

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished (``Success`` or ``Failure``); unknown statuses are not terminal."""
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


class _ResponseModel(BaseModel):
    """Base of the response models: fields the API adds later are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class KlingSubmitResult(_ResponseModel):
    """The submit response: ``{"output": {"task_id": ...}, "request_id": ...}``."""

    task_id: str = Field(min_length=1)
    request_id: str | None = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingSubmitResult:
        """Parse the API's submit response body."""
        output = payload.get("output") if isinstance(payload, dict) else None
        return cls.model_validate(
            {
                "task_id": output.get("task_id") if isinstance(output, dict) else None,
                "request_id": payload.get("request_id") if isinstance(payload, dict) else None,
            }
        )


class KlingTask(_ResponseModel):
    """
    A task as the status endpoint reports it.

    :param task_id: the API's task id (``output.task_id``).
    :param status: ``output.task_status``.
    :param urls: the result video URLs (on ``Success``); temporary, copy them promptly.
    :param error_message: the vendor's message (on ``Failure``).
    :param submit_time: Unix seconds.
    :param finish_time: Unix seconds.
    :param usage_seconds: billed video seconds (``usage.duration``).
    :param request_id: the status request's id.
    """

    task_id: str
    status: TaskStatus
    urls: list[str] = Field(default_factory=list)
    error_message: str | None = None
    submit_time: int | None = None
    finish_time: int | None = None
    usage_seconds: int | None = None
    request_id: str | None = None

    @classmethod
    def from_api(cls, payload: Any) -> KlingTask:
        """Parse the API's status response body (``{"output": {...}, "usage": {...}, "request_id"}``)."""
        body = payload if isinstance(payload, dict) else {}
        output = body.get("output") if isinstance(body.get("output"), dict) else {}
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return cls.model_validate(
            {
                "task_id": output.get("task_id"),
                "status": output.get("task_status"),
                "urls": output.get("urls") or [],
                "error_message": output.get("error_message") or None,
                "submit_time": output.get("submit_time"),
                "finish_time": output.get("finish_time"),
                "usage_seconds": usage.get("duration"),
                "request_id": body.get("request_id") or None,
            }
        )

    def as_result(self) -> dict[str, Any]:
        """
        Return the finished-task dict that operators and sensors push to XCom.

        It holds ids, the status, result URLs and numbers only: never a secret, never the whole response.
        """
        return {
            "kling_task_id": self.task_id,
            "status": self.status.value,
            "urls": list(self.urls),
            "usage_seconds": self.usage_seconds,
            "submit_time": self.submit_time,
            "finish_time": self.finish_time,
        }
