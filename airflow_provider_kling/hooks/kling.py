"""
:class:`KlingHook`: the Airflow connection -> httpx clients -> typed calls of the ModelVerse task API.

All HTTP of the provider lives here: submitting a task, querying its status (sync and async), waiting for
it on a worker, and streaming a result video. The connection parsing, error mapping, retry policy and
client sharing live in the private modules beside this one, each a set of pure functions tested alone.
"""

from __future__ import annotations

import asyncio
import copy
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, NoReturn, Self, TypeVar

import httpx
from airflow.sdk import BaseHook
from pydantic import ValidationError

from airflow_provider_kling.constants import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    HOOK_NAME,
    STATUS_PATH,
    SUBMIT_PATH,
)
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingBadRequestError,
    KlingConnectionConfigError,
    KlingError,
    KlingNotFoundError,
    KlingResultExpiredError,
    KlingSubmitUncertainError,
    KlingTaskTimeoutError,
)
from airflow_provider_kling.get_provider_info import CONNECTION_UI_FIELD_BEHAVIOUR
from airflow_provider_kling.hooks._clients import new_sync_client, shared_async_pool
from airflow_provider_kling.hooks._errors import (
    api_error,
    decode_json,
    embedded_error,
    malformed_response_error,
    transport_error,
)
from airflow_provider_kling.hooks._retry import Decision, RetryPolicy, decide
from airflow_provider_kling.hooks._settings import (
    KlingSettings,
    check_max_retries,
    check_timeout,
    settings_from_connection,
)
from airflow_provider_kling.models import KlingSubmitResult, KlingTask, KlingVideoRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from types import TracebackType

    from airflow.sdk import Connection

__all__ = ["DEFAULT_POLL_INTERVAL", "DEFAULT_WAIT_TIMEOUT", "KlingHook", "KlingSettings"]

#: Default seconds between two status queries of :meth:`KlingHook.wait_for_task`.
DEFAULT_POLL_INTERVAL: Final = 30.0
#: Default seconds :meth:`KlingHook.wait_for_task` waits for a task.
DEFAULT_WAIT_TIMEOUT: Final = 3600.0
#: Statuses of a result URL that mean "expired" (presigned URLs answer 403 once past their expiry).
_EXPIRED_STATUSES: Final = frozenset({403, 404, 410})
#: How much of an error body of a result URL is read for the exception.
_ERROR_BODY_READ_LIMIT: Final = 64 * 1024
#: A made-up task id for :meth:`KlingHook.test_connection`.
_PROBE_TASK_ID: Final = "airflow-connection-test-0000000000"

_T = TypeVar("_T")


class KlingHook(BaseHook):
    """
    Talk to Kling V3 Omni on the ModelVerse task API: submit tasks, query and wait for them, stream results.

    The connection's password is the API key (sent bare in the ``Authorization`` header), its host the
    base URL (empty for ``https://api.modelverse.cn``), and its extras ``timeout`` (seconds per request,
    default 30) and ``max_retries`` (default 5). Failed calls are retried with exponential backoff and
    jitter, honouring ``Retry-After``; a submit (every task is billed) only where the API provably created
    nothing, else :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError` is raised.

    Sync methods use one ``httpx.Client`` per hook instance (close it with :meth:`close` or use the hook as
    a context manager); async methods share one ``httpx.AsyncClient`` per event loop with every other hook
    in the process, closed when the loop ends. At most 16 async requests are in flight at once per event
    loop, over every hook on it (as many as the shared pool's connections); more wait their turn.

    :param kling_conn_id: the Airflow connection of the ModelVerse API.
    :param timeout: seconds per HTTP request; overrides the connection's ``timeout`` extra.
    :param max_retries: retries of a failed request; overrides the connection's ``max_retries`` extra.
    :raises ValueError: ``timeout`` or ``max_retries`` is out of range.
    """

    conn_name_attr = "kling_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    def __init__(
        self,
        kling_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__()
        self.kling_conn_id = kling_conn_id
        self.timeout = None if timeout is None else check_timeout(timeout, "timeout")
        self.max_retries = None if max_retries is None else check_max_retries(max_retries, "max_retries")
        #: Backoff and jitter of retries (replace it to tune them).
        self.retry_policy = RetryPolicy()
        #: How the sync methods wait (injectable, so tests do not wait).
        self.sleep: Callable[[float], None] = time.sleep
        #: How the async methods wait (injectable, so tests do not wait).
        self.async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        #: The clock of :meth:`wait_for_task` (injectable).
        self.monotonic: Callable[[], float] = time.monotonic
        self._settings: KlingSettings | None = None
        self._client: httpx.Client | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form's field behaviour: the same as the provider manifest."""
        return copy.deepcopy(CONNECTION_UI_FIELD_BEHAVIOUR)

    # -- connection -------------------------------------------------------------------------------------

    @property
    def settings(self) -> KlingSettings:
        """The resolved connection settings (fetched once per hook instance, then cached)."""
        if self._settings is None:
            conn = self.get_connection(self.kling_conn_id)
            self._settings = self._resolve(conn, conn.extra_dejson)
        return self._settings

    async def aget_settings(self) -> KlingSettings:
        """Return the resolved connection settings, fetching the connection without blocking the loop."""
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.kling_conn_id, hook=self)
            extra = await get_async_extra_dejson(conn)
            self._settings = self._resolve(conn, extra)
        return self._settings

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> KlingSettings:
        return settings_from_connection(
            self.kling_conn_id,
            host=conn.host,
            password=conn.password,
            port=conn.port,
            extra=extra,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def get_conn(self) -> httpx.Client:
        """Return the hook's sync ``httpx.Client`` (created once, after the connection is validated)."""
        if self._client is None or self._client.is_closed:
            _ = self.settings
            self._client = new_sync_client()
        return self._client

    def close(self) -> None:
        """Close the hook's sync client (the shared async client belongs to its event loop)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- API calls ----------------------------------------------------------------------------------------

    def submit_task(
        self, request: KlingVideoRequest | Mapping[str, Any], *, max_retries: int | None = None
    ) -> str:
        """
        Submit a video task and return its task id.

        A mapping is validated as a :class:`KlingVideoRequest` first, so an invalid request makes no HTTP
        call. The submit is retried only where the API provably created no task (429, vendor code
        006001094, a connection that never opened); after an ambiguous failure it is not retried.

        :param request: the request, or its documented JSON body.
        :param max_retries: overrides the connection's retry budget for this call.
        :raises pydantic.ValidationError: the request breaks an API rule (the message names the rule).
        :raises ValueError: the request still holds ``s3://`` inputs (resolve them to URLs first).
        :raises KlingSubmitUncertainError: the submit failed in a way that may have created a task.
        :raises KlingAPIError: the API refused the request.
        """
        video_request = self._validated(request)
        settings = self.settings
        body = video_request.to_api_body()
        external_task_id = video_request.parameters.external_task_id
        client = self.get_conn()

        def attempt() -> str:
            response = self._send(client, settings, "POST", SUBMIT_PATH, what="submit", json=body)
            return self._submit_task_id(response, settings)

        task_id = self._with_retries(
            attempt,
            what="submit",
            submit=True,
            max_retries=self._budget(settings, max_retries),
            external_task_id=external_task_id,
        )
        self.log.info("Submitted Kling task %s", task_id)
        return task_id

    async def asubmit_task(
        self, request: KlingVideoRequest | Mapping[str, Any], *, max_retries: int | None = None
    ) -> str:
        """
        Submit a video task and return its task id, without blocking the event loop.

        Same validation and retry rules as :meth:`submit_task`.

        :param request: the request, or its documented JSON body.
        :param max_retries: overrides the connection's retry budget for this call.
        """
        video_request = self._validated(request)
        settings = await self.aget_settings()
        body = video_request.to_api_body()
        external_task_id = video_request.parameters.external_task_id
        client, slots = await shared_async_pool()

        async def attempt() -> str:
            response = await self._asend(
                client, slots, settings, "POST", SUBMIT_PATH, what="submit", json=body
            )
            return self._submit_task_id(response, settings)

        task_id = await self._awith_retries(
            attempt,
            what="submit",
            submit=True,
            max_retries=self._budget(settings, max_retries),
            external_task_id=external_task_id,
        )
        self.log.info("Submitted Kling task %s", task_id)
        return task_id

    def get_task(self, task_id: str, *, max_retries: int | None = None) -> KlingTask:
        """
        Return a task's status (status queries are free: every retryable failure is retried).

        :param task_id: the API's task id.
        :param max_retries: overrides the connection's retry budget for this call.
        :raises KlingNotFoundError: the API does not know the task.
        :raises KlingAPIError: the query failed (after the retries, where retrying can help).
        :raises KlingTransportError: the API could not be reached (after the retries).
        """
        return self._get_task(task_id, max_retries=max_retries, deadline=None)

    async def aget_task(self, task_id: str, *, max_retries: int | None = None) -> KlingTask:
        """
        Return a task's status without blocking the event loop (what the trigger polls with).

        :param task_id: the API's task id.
        :param max_retries: overrides the connection's retry budget for this call.
        """
        what = self._status_what(task_id)
        settings = await self.aget_settings()
        client, slots = await shared_async_pool()

        async def attempt() -> KlingTask:
            response = await self._asend(
                client, slots, settings, "GET", STATUS_PATH, what=what, params={"task_id": task_id}
            )
            return self._task(response, settings, what)

        return await self._awith_retries(
            attempt, what=what, submit=False, max_retries=self._budget(settings, max_retries)
        )

    def wait_for_task(
        self,
        task_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> KlingTask:
        """
        Poll a task until it finishes and return it: ``Success`` or ``Failure`` (a failure is returned).

        Status errors within a query's retry budget are ridden out; a query that exhausts its retries is
        logged and polling goes on until ``timeout`` (every error :meth:`is_retryable_error` accepts). Errors
        that polling cannot fix (a rejected key, an unknown task, a bad request) are raised at once. An
        unknown status keeps polling. The status is logged (INFO) when it changes, each poll at DEBUG.

        :param task_id: the API's task id.
        :param poll_interval: seconds between two status queries.
        :param timeout: seconds the whole wait may take.
        :raises KlingTaskTimeoutError: the task did not finish within ``timeout``.
        """
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout!r}")
        deadline = self.monotonic() + timeout
        last_status: str | None = None
        while True:
            try:
                task = self._get_task(task_id, max_retries=None, deadline=deadline)
            except KlingError as error:
                if not self.is_retryable_error(error):
                    raise
                self.log.warning("Status query of Kling task %s failed, polling on: %s", task_id, error)
            else:
                self.log.debug("Kling task %s: status %s", task_id, task.status.value)
                if task.status.is_terminal:
                    self.log.info("Kling task %s finished: %s", task_id, task.status.value)
                    return task
                if task.status.value != last_status:
                    self.log.info("Kling task %s is %s", task_id, task.status.value)
                last_status = task.status.value
            time_left = deadline - self.monotonic()
            if time_left <= 0:
                raise KlingTaskTimeoutError(task_id, timeout, last_status)
            self.sleep(min(poll_interval, time_left))

    @staticmethod
    def is_retryable_error(error: BaseException) -> bool:
        """
        Whether a failed status query may pass if the caller queries again (what a waiter rides out).

        The hook has already retried the query within its budget; a waiter (:meth:`wait_for_task`, the
        trigger, the sensor) keeps polling within its own timeout through every error the hook's retry
        policy calls retryable: rate limits, server faults (408/409/429/5xx, vendor codes 006001094 and
        006001095), network failures and malformed answers. Auth, not-found, bad-request, task-creation
        and configuration errors are final, and so is anything that is not a
        :class:`~airflow_provider_kling.exceptions.KlingError`.

        :param error: the exception a status query raised.
        """
        return isinstance(error, KlingError) and decide(error, submit=False) is Decision.RETRY

    @contextmanager
    def stream_result(self, url: str, *, kling_task_id: str, offset: int = 0) -> Iterator[httpx.Response]:
        """
        Open a result URL and yield the streaming ``httpx.Response`` (read it with ``iter_bytes()``).

        Result URLs are presigned: the API key is sent only when the URL is under the API base URL. With
        ``offset > 0`` a ``Range: bytes=<offset>-`` request is made and a ``206`` expected. Opening is
        retried like a status query; a failure while reading the body raises
        :class:`~airflow_provider_kling.exceptions.KlingTransportError` (``sent=True``) out of the block,
        so that the caller can resume from the bytes it has.

        :param url: the result URL (``output.urls[i]`` of a finished task).
        :param kling_task_id: the task the URL belongs to, for the error messages.
        :param offset: the byte to start at (for a resumed download).
        :raises KlingResultExpiredError: the URL answered 403, 404 or 410: it has expired.
        :raises KlingAPIError: the URL answered another error, or ignored the ``Range`` request.
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a whole number of bytes >= 0, got {offset!r}")
        settings = self.settings
        target = _checked_result_url(url)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if settings.is_api_url(url):
            headers.update(settings.auth_headers())
        what = f"result download of task {kling_task_id}"
        client = self.get_conn()

        def attempt() -> httpx.Response:
            request = client.build_request("GET", url, headers=headers, timeout=settings.timeout)
            try:
                response = client.send(request, stream=True, follow_redirects=True)
            except httpx.RequestError as error:
                raise transport_error(error, what=what, url=target, api_key=settings.api_key) from error
            try:
                self._check_result_response(response, settings, what, kling_task_id, offset)
            except BaseException:
                response.close()
                raise
            return response

        self.log.info(
            "Downloading the result of Kling task %s from %s (offset %d)", kling_task_id, target, offset
        )
        response = self._with_retries(attempt, what=what, submit=False, max_retries=settings.max_retries)
        try:
            yield response
        except (httpx.TransportError, httpx.DecodingError) as error:
            raise transport_error(error, what=what, url=target, api_key=settings.api_key) from error
        finally:
            response.close()

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the connection with one cheap authenticated call: the status of a made-up task.

        A 401/403 means the key was rejected; a 404 (or 400) means the API took the key and merely does
        not know the task. The key itself is never part of the message.
        """
        try:
            settings = self.settings
            self.get_task(_PROBE_TASK_ID, max_retries=0)
        except KlingConnectionConfigError as error:
            return False, str(error)
        except KlingAuthError as error:
            return False, (
                f"The Kling API at {settings.base_url} rejected the API key (HTTP {error.status_code}): "
                "check the connection's password."
            )
        except (KlingNotFoundError, KlingBadRequestError):
            return True, f"Connected to the Kling API at {settings.base_url}: the API key was accepted."
        except KlingError as error:
            return False, f"Could not check the Kling connection: {error}"
        finally:
            self.close()
        return True, f"Connected to the Kling API at {settings.base_url}: the API key was accepted."

    # -- internals ------------------------------------------------------------------------------------------

    def _get_task(self, task_id: str, *, max_retries: int | None, deadline: float | None) -> KlingTask:
        what = self._status_what(task_id)
        settings = self.settings
        client = self.get_conn()

        def attempt() -> KlingTask:
            response = self._send(
                client, settings, "GET", STATUS_PATH, what=what, params={"task_id": task_id}
            )
            return self._task(response, settings, what)

        return self._with_retries(
            attempt,
            what=what,
            submit=False,
            max_retries=self._budget(settings, max_retries),
            deadline=deadline,
        )

    @staticmethod
    def _validated(request: KlingVideoRequest | Mapping[str, Any]) -> KlingVideoRequest:
        video_request = (
            request
            if isinstance(request, KlingVideoRequest)
            else KlingVideoRequest.model_validate(dict(request))
        )
        s3_inputs = video_request.s3_input_urls
        if s3_inputs:
            raise ValueError(
                "The request still holds s3:// inputs, which the Kling API cannot read: "
                f"{', '.join(s3_inputs)}. Resolve them to presigned HTTPS URLs first "
                "(KlingSubmitVideoOperator does this)."
            )
        return video_request

    @staticmethod
    def _status_what(task_id: str) -> str:
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError(f"task_id must be a non-empty Kling task id, got {task_id!r}")
        return f"status query of task {task_id}"

    @staticmethod
    def _budget(settings: KlingSettings, max_retries: int | None) -> int:
        if max_retries is None:
            return settings.max_retries
        return check_max_retries(max_retries, "max_retries")

    @staticmethod
    def _send(
        client: httpx.Client,
        settings: KlingSettings,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = settings.url(path)
        try:
            response = client.request(method, url, **KlingHook._request_options(settings, json, params))
        except httpx.RequestError as error:
            raise transport_error(error, what=what, url=url, api_key=settings.api_key) from error
        return KlingHook._checked(response, settings, what)

    @staticmethod
    async def _asend(
        client: httpx.AsyncClient,
        slots: asyncio.Semaphore,
        settings: KlingSettings,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = settings.url(path)
        try:
            # The loop's slot is held while the request and its body are in flight (not while retrying):
            # a burst waits here, in O(1), instead of in httpcore's pool queue.
            async with slots:
                response = await client.request(
                    method, url, **KlingHook._request_options(settings, json, params)
                )
        except httpx.RequestError as error:
            raise transport_error(error, what=what, url=url, api_key=settings.api_key) from error
        return KlingHook._checked(response, settings, what)

    @staticmethod
    def _request_options(settings: KlingSettings, json: Any, params: dict[str, str] | None) -> dict[str, Any]:
        """Options both transports send: the key's header, the body, the query, the timeout."""
        return {
            "headers": settings.auth_headers(),
            "json": json,
            "params": params,
            "timeout": settings.timeout,
        }

    @staticmethod
    def _checked(response: httpx.Response, settings: KlingSettings, what: str) -> httpx.Response:
        """Return a successful response; raise the error an unsuccessful one maps to."""
        if not response.is_success:
            raise api_error(
                response.status_code, response.headers, response.content, what=what, api_key=settings.api_key
            )
        return response

    @staticmethod
    def _payload(response: httpx.Response, settings: KlingSettings, what: str) -> Any:
        try:
            return decode_json(response.content)
        except ValueError:
            raise malformed_response_error(
                response.status_code,
                response.content,
                what=what,
                problem="a body that is not JSON",
                api_key=settings.api_key,
            ) from None

    def _submit_task_id(self, response: httpx.Response, settings: KlingSettings) -> str:
        payload = self._payload(response, settings, "submit")
        try:
            return KlingSubmitResult.from_api(payload).task_id
        except ValidationError:
            self._raise_embedded_or_malformed(response, payload, settings, "submit")

    def _task(self, response: httpx.Response, settings: KlingSettings, what: str) -> KlingTask:
        payload = self._payload(response, settings, what)
        output = payload.get("output") if isinstance(payload, dict) else None
        if isinstance(output, dict) and output.get("task_id") and output.get("task_status"):
            try:
                return KlingTask.from_api(payload)
            except ValidationError:
                pass
        self._raise_embedded_or_malformed(response, payload, settings, what)

    @staticmethod
    def _raise_embedded_or_malformed(
        response: httpx.Response, payload: Any, settings: KlingSettings, what: str
    ) -> NoReturn:
        details = embedded_error(payload)
        if details is not None:
            raise api_error(
                response.status_code,
                response.headers,
                response.content,
                what=what,
                api_key=settings.api_key,
                details=details,
            )
        raise malformed_response_error(
            response.status_code,
            response.content,
            what=what,
            problem="a body that holds no usable task",
            api_key=settings.api_key,
        )

    def _check_result_response(
        self, response: httpx.Response, settings: KlingSettings, what: str, kling_task_id: str, offset: int
    ) -> None:
        status = response.status_code
        if status in _EXPIRED_STATUSES:
            raise KlingResultExpiredError(kling_task_id, status)
        if not response.is_success:
            content = _read_at_most(response, _ERROR_BODY_READ_LIMIT)
            raise api_error(status, response.headers, content, what=what, api_key=settings.api_key)
        if offset and status != 206:
            raise KlingAPIError(
                f"Kling {what} failed: the server answered {status} to a request for bytes {offset}- "
                "(it ignored the Range header); download the result again from the start",
                status_code=status,
            )

    def _with_retries(
        self,
        attempt: Callable[[], _T],
        *,
        what: str,
        submit: bool,
        max_retries: int,
        external_task_id: str | None = None,
        deadline: float | None = None,
    ) -> _T:
        retry_number = 0
        while True:
            try:
                return attempt()
            except KlingError as error:
                delay = self._next_delay(
                    error,
                    what=what,
                    retry_number=retry_number,
                    max_retries=max_retries,
                    submit=submit,
                    external_task_id=external_task_id,
                    deadline=deadline,
                )
            self.sleep(delay)
            retry_number += 1

    async def _awith_retries(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        what: str,
        submit: bool,
        max_retries: int,
        external_task_id: str | None = None,
    ) -> _T:
        retry_number = 0
        while True:
            try:
                return await attempt()
            except KlingError as error:
                delay = self._next_delay(
                    error,
                    what=what,
                    retry_number=retry_number,
                    max_retries=max_retries,
                    submit=submit,
                    external_task_id=external_task_id,
                    deadline=None,
                )
            await self.async_sleep(delay)
            retry_number += 1

    def _next_delay(
        self,
        error: KlingError,
        *,
        what: str,
        retry_number: int,
        max_retries: int,
        submit: bool,
        external_task_id: str | None,
        deadline: float | None,
    ) -> float:
        time_left = None if deadline is None else deadline - self.monotonic()
        try:
            delay = self.retry_policy.next_delay(
                error,
                retry_number=retry_number,
                max_retries=max_retries,
                submit=submit,
                external_task_id=external_task_id,
                time_left=time_left,
            )
        except KlingSubmitUncertainError:
            self.log.error("Kling %s failed ambiguously; not retrying: a task may exist: %s", what, error)
            raise
        self.log.warning(
            "Kling %s failed (%s); retry %d of %d in %.2f s",
            what,
            error,
            retry_number + 1,
            max_retries,
            delay,
        )
        return delay


def _checked_result_url(url: str) -> str:
    """Return ``url`` without its query string (for messages), after checking that it is HTTP(S)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("The result URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"The result URL must be an http(s) URL, got scheme {parsed.scheme!r}")
    return str(parsed.copy_with(query=None, fragment=None))


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:limit]
