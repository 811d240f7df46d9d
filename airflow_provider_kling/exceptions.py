"""
The provider's whole error tree, keyed by what the caller can do about an error.

::

    KlingError
    ├── KlingConnectionConfigError      the Airflow connection is unusable (no key, bad extras)
    ├── KlingTransportError             no HTTP response at all (connect error, timeout, reset)
    ├── KlingAPIError                   the API answered with an error status
    │   ├── KlingBadRequestError        400 / 422: the request is wrong, do not retry
    │   ├── KlingAuthError              401 / 403: the key is wrong or lacks permission
    │   ├── KlingNotFoundError          404: no such task
    │   ├── KlingRateLimitError         429 or vendor code 006001094: back off and retry
    │   ├── KlingServerError            5xx or vendor code 006001095: upstream fault
    │   └── KlingTaskCreationError      vendor code 006001099: the request was not accepted
    ├── KlingSubmitUncertainError       a submit failed ambiguously: a (billed) task may exist
    ├── KlingTaskFailedError            the task ran and ended in ``Failure``
    ├── KlingTaskTimeoutError           the task did not finish within the caller's timeout
    ├── KlingResultExpiredError         a result URL answered 403/404: it has expired
    ├── KlingTaskNotReadyError          the task has not succeeded (yet): nothing to copy
    ├── KlingTransferError              copying a result to S3 failed; nothing was left behind
    │   ├── KlingResultDownloadError    the download broke and could not be resumed
    │   ├── KlingS3UploadError          S3 rejected a part, the completion or the size check
    │   └── KlingS3KeyExistsError       replace=False and a different object is at the key
    ├── KlingS3InputError               an s3:// input breaks R18/R21 or cannot be read
    └── MediaHeaderError                bytes are not a supported image/video header
        └── NeedMoreBytesError          the header runs past the bytes given

No exception message, ``repr`` or attribute ever holds the API key or the ``Authorization`` header.
"""

from __future__ import annotations

from airflow_provider_kling.constants import RESULT_URL_TTL_HOURS


class KlingError(Exception):
    """Base class of every error raised by this provider."""


class KlingConnectionConfigError(KlingError):
    """The Airflow connection cannot be used as it is (missing API key, invalid extras)."""


class KlingTransportError(KlingError):
    """
    The request got no HTTP response: connection refused, DNS failure, timeout or a reset.

    :param message: what happened, without any secret.
    :param sent: whether the request may have reached the server (``False`` only when the connection
        was refused before any byte was sent).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only ``sent``: the default pickling would call ``cls(message)`` and fail.
        return (_rebuild_transport_error, (type(self), str(self), self.sent))


def _rebuild_transport_error(cls: type[KlingTransportError], message: str, sent: bool) -> KlingTransportError:
    return cls(message, sent=sent)


class KlingAPIError(KlingError):
    """
    The API answered with an error.

    :param message: a readable summary (the vendor's message where the body had one).
    :param status_code: the HTTP status code.
    :param vendor_code: the vendor's error code (e.g. ``006001094``), if the body carried one.
    :param request_id: the vendor's request id, if the body or headers carried one.
    :param body_excerpt: the first bytes of the response body, decoded leniently.
    :param retry_after: seconds the server asked to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        vendor_code: str | None = None,
        request_id: str | None = None,
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.vendor_code = vendor_code
        self.request_id = request_id
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"HTTP {self.status_code}"]
        if self.vendor_code:
            parts.append(f"code {self.vendor_code}")
        if self.request_id:
            parts.append(f"request_id {self.request_id}")
        text = f"{self.message} ({', '.join(parts)})"
        if self.body_excerpt:
            text += f"; body: {self.body_excerpt}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor: rebuild through a helper so the error survives pickling
        # (Airflow ships exceptions between processes).
        return (
            _rebuild_api_error,
            (
                type(self),
                self.message,
                self.status_code,
                self.vendor_code,
                self.request_id,
                self.body_excerpt,
                self.retry_after,
            ),
        )


def _rebuild_api_error(
    cls: type[KlingAPIError],
    message: str,
    status_code: int,
    vendor_code: str | None,
    request_id: str | None,
    body_excerpt: str,
    retry_after: float | None,
) -> KlingAPIError:
    return cls(
        message,
        status_code=status_code,
        vendor_code=vendor_code,
        request_id=request_id,
        body_excerpt=body_excerpt,
        retry_after=retry_after,
    )


class KlingBadRequestError(KlingAPIError):
    """HTTP 400/422: the API rejected the request itself. Retrying the same request cannot help."""


class KlingAuthError(KlingAPIError):
    """HTTP 401/403: the API key is wrong, revoked or lacks permission. Fix the connection's password."""


class KlingNotFoundError(KlingAPIError):
    """HTTP 404: the task id is unknown to the API (wrong id, or another account's key)."""


class KlingRateLimitError(KlingAPIError):
    """HTTP 429 or vendor code ``006001094`` (task resources insufficient): back off and retry."""


class KlingServerError(KlingAPIError):
    """HTTP 5xx or vendor code ``006001095``: an upstream fault; a submit may have created a task."""


class KlingTaskCreationError(KlingAPIError):
    """Vendor code ``006001099``: the API did not accept the task. Surface it; do not loop."""


class KlingSubmitUncertainError(KlingError):
    """
    A submit failed in a way that does not prove whether the server created a task.

    Every task is billed, so the submit is not retried: look the task up in the vendor's console by its
    ``external_task_id`` before submitting again.

    :param message: what happened.
    :param external_task_id: the ``external_task_id`` the request carried, if any.
    """

    def __init__(self, message: str, *, external_task_id: str | None = None) -> None:
        hint = (
            f" Look it up by external_task_id {external_task_id!r} before submitting again."
            if external_task_id
            else " Check the vendor's console before submitting again."
        )
        super().__init__(f"{message} A task may have been created (and billed).{hint}")
        self.external_task_id = external_task_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_uncertain, (str(self), self.external_task_id))


def _rebuild_uncertain(text: str, external_task_id: str | None) -> KlingSubmitUncertainError:
    error = KlingSubmitUncertainError.__new__(KlingSubmitUncertainError)
    Exception.__init__(error, text)
    error.external_task_id = external_task_id
    return error


class KlingTaskFailedError(KlingError):
    """
    The Kling task ran and ended in ``Failure``.

    :param kling_task_id: the API's task id.
    :param error_message: the vendor's error message for the task.
    """

    def __init__(self, kling_task_id: str, error_message: str | None) -> None:
        self.kling_task_id = kling_task_id
        self.error_message = error_message
        super().__init__(f"Kling task {kling_task_id} failed: {error_message or 'no error message given'}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.kling_task_id, self.error_message))


class KlingTaskTimeoutError(KlingError):
    """
    The Kling task did not reach a terminal status within the caller's timeout.

    :param kling_task_id: the API's task id.
    :param timeout: the timeout in seconds.
    :param last_status: the last status seen.
    """

    def __init__(self, kling_task_id: str, timeout: float, last_status: str | None = None) -> None:
        self.kling_task_id = kling_task_id
        self.timeout = timeout
        self.last_status = last_status
        seen = f" (last status {last_status})" if last_status else ""
        super().__init__(f"Kling task {kling_task_id} did not finish within {timeout:g} s{seen}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.kling_task_id, self.timeout, self.last_status))


class KlingResultExpiredError(KlingError):
    """
    A result URL answered 403 or 404: result URLs are temporary and this one has expired.

    :param kling_task_id: the API's task id.
    :param status_code: the HTTP status the result URL answered with.
    """

    def __init__(self, kling_task_id: str, status_code: int) -> None:
        self.kling_task_id = kling_task_id
        self.status_code = status_code
        super().__init__(
            f"The result URL of Kling task {kling_task_id} has expired (HTTP {status_code}): result URLs "
            f"stay valid for about {RESULT_URL_TTL_HOURS} hours; re-run the task and copy its video within "
            f"{RESULT_URL_TTL_HOURS} hours."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.kling_task_id, self.status_code))


class KlingTransferError(KlingError):
    """Copying a result video to S3 failed. Nothing was left behind: the multipart upload was aborted."""


class KlingResultDownloadError(KlingTransferError):
    """The result video could not be downloaded whole (truncated, reset) within the allowed attempts."""


class KlingS3UploadError(KlingTransferError):
    """S3 rejected the upload (a part, the completion, or the size check of the landed object)."""


class KlingS3KeyExistsError(KlingTransferError):
    """``replace=False`` and a different object already exists at the destination key."""


class KlingTaskNotReadyError(KlingError):
    """The task has not finished successfully yet, or it succeeded without result URLs: nothing to copy."""


class KlingS3InputError(KlingError, ValueError):
    """
    One or more ``s3://`` inputs cannot be used; the request was not submitted.

    :param problems: one line per problem, each starting with the rule ID and naming the field.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problems,))


class MediaHeaderError(KlingError, ValueError):
    """The bytes are not a supported image or video, or their header is corrupt."""


class NeedMoreBytesError(MediaHeaderError):
    """
    The header runs past the bytes given: read the file's bytes ``[offset, end)`` and try again.

    A reader given a prefix of a file needs the prefix to reach ``end``; :func:`find_moov_range` needs
    exactly that range. A caller that passed the whole file has a truncated file.

    :param offset: the first file offset needed.
    :param end: the file offset (exclusive) up to which bytes are needed.
    :param what: what the reader was reading.
    """

    def __init__(self, offset: int, end: int, what: str) -> None:
        self.offset = offset
        self.end = end
        self.what = what
        super().__init__(f"need more bytes: {what} needs bytes {offset} to {end} of the file")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.offset, self.end, self.what))
