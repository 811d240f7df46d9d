"""
:class:`KlingHook`: the Airflow connection -> typed calls of the ModelVerse task API.

Submitting a task, querying its status (sync and async), waiting for it on a worker, and streaming a
result video. The hook resolves the connection and composes the private modules beside this one, each
tested alone: sending one request and reading its answer (``_transport``, ``_answers``), retrying it
(``_retry``), the shared clients (``_clients``), the connection's settings (``_settings``), the error
mapping (``_errors``) and the result download (``_download``).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Final, Self

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_kling.constants import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    HOOK_NAME,
    STATUS_PATH,
    SUBMIT_PATH,
)
from airflow_provider_kling.exceptions import (
    KlingAuthError,
    KlingBadRequestError,
    KlingConnectionConfigError,
    KlingError,
    KlingNotFoundError,
    KlingTaskTimeoutError,
)
from airflow_provider_kling.hooks._answers import submitted_task_id, task_from_answer
from airflow_provider_kling.hooks._clients import new_sync_client, shared_async_pool
from airflow_provider_kling.hooks._download import KlingResultStream, checked_result_url
from airflow_provider_kling.hooks._limits import (
    DEFAULT_DOWNLOAD_RETRY_DELAY,
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_DOWNLOAD_ATTEMPTS,
    DEFAULT_MAX_RESULT_BYTES,
    DownloadLimits,
)
from airflow_provider_kling.hooks._redact import secret_forms
from airflow_provider_kling.hooks._retry import Decision, RetriedCall, RetryPolicy, decide
from airflow_provider_kling.hooks._settings import (
    KlingSettings,
    check_max_retries,
    check_timeout,
    settings_from_connection,
)
from airflow_provider_kling.hooks._transport import asend, send
from airflow_provider_kling.models import (
    KlingTask,
    KlingVideoRequest,
    TaskStatus,
    check_kling_task_id,
)
from airflow_provider_kling.waiting import check_poll_interval, check_wait_timeout, no_result_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

    import httpx
    from airflow.providers.common.compat.sdk import Connection

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_WAIT_TIMEOUT",
    "KlingHook",
    "KlingResultStream",
    "KlingSettings",
    "checked_finished_task",
]

#: A made-up task id for :meth:`KlingHook.test_connection`.
_PROBE_TASK_ID: Final = "airflow-connection-test-0000000000"

#: Connection fetches in flight, by (loop, conn id, timeout, max_retries): hooks asking at once share one.
_settings_lookups: dict[tuple[object, str, float | None, int | None], asyncio.Future[KlingSettings]] = {}

#: The forms of API keys this process has registered with Airflow's secrets masker (once each: the
#: masker rebuilds its pattern on every new secret, and a triggerer resolves thousands of hooks).
_masked_key_forms: set[str] = set()


def _unmasked_key_forms(api_key: str) -> list[str]:
    """The forms of ``api_key`` (raw, JSON-escaped, URL-encoded) not yet given to the secrets masker."""
    forms = [form for form in secret_forms(api_key) if form not in _masked_key_forms]
    _masked_key_forms.update(forms)
    return forms


class KlingHook(BaseHook):
    """
    Talk to Kling V3 Omni on the ModelVerse task API: submit tasks, query and wait for them, stream results.

    The connection's password is the API key (sent bare in the ``Authorization`` header), its host the
    base URL (empty for ``https://api.modelverse.cn``), and its extras ``timeout`` (seconds per request,
    default 30), ``max_retries`` (default 5) and ``max_in_flight`` (async requests in flight per event loop,
    default 100). Failed calls are retried with exponential backoff and
    jitter, honouring ``Retry-After``; a submit (every task is billed) only where the API provably created
    nothing, else :class:`~airflow_provider_kling.exceptions.KlingSubmitUncertainError` is raised.

    Sync methods use one ``httpx.Client`` per hook instance (close it with :meth:`close` or use the hook as
    a context manager); async methods share one ``aiohttp.ClientSession`` per event loop with every other
    hook in the process, closed when the loop ends, with the same deadlines, retries, error translation and
    key redaction as the sync methods. At most ``max_in_flight`` (a connection extra, default 100) async
    requests of one connection are in flight at once per event loop, over every hook on it; more wait
    their turn.

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

    # -- connection -------------------------------------------------------------------------------------

    @property
    def settings(self) -> KlingSettings:
        """The resolved connection settings (fetched once per hook instance, then cached)."""
        if self._settings is None:
            from airflow.providers.common.compat.sdk import mask_secret

            conn = self.get_connection(self.kling_conn_id)
            settings = self._resolve(conn, conn.extra_dejson)
            for form in _unmasked_key_forms(settings.api_key):
                mask_secret(form)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> KlingSettings:
        """
        Return the resolved connection settings, fetching the connection without blocking the loop.

        Hooks of one connection that ask at the same moment on one loop (a triggerer starting a batch of
        triggers) share one fetch: the first one's, which every one of them awaits. Nothing is kept once
        it is done: the next hook fetches the connection again.
        """
        if self._settings is None:
            key = (asyncio.get_running_loop(), self.kling_conn_id, self.timeout, self.max_retries)
            lookup = _settings_lookups.get(key)
            if lookup is None:
                lookup = _settings_lookups[key] = asyncio.ensure_future(self._afetch_settings())
                lookup.add_done_callback(lambda _: _settings_lookups.pop(key, None))
            # Shielded: a waiter that is cancelled (its trigger ends) does not cancel the others' fetch.
            self._settings = await asyncio.shield(lookup)
        return self._settings

    async def _afetch_settings(self) -> KlingSettings:
        from airflow.providers.common.compat.connection import (
            get_async_connection,
            get_async_extra_dejson,
        )

        from airflow_provider_kling._compat import amask_secret

        conn = await get_async_connection(self.kling_conn_id, hook=self)
        extra = await get_async_extra_dejson(conn)
        settings = self._resolve(conn, extra)
        for form in _unmasked_key_forms(settings.api_key):
            await amask_secret(form)
        return settings

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> KlingSettings:
        return settings_from_connection(
            self.kling_conn_id,
            host=conn.host,
            password=conn.password,
            port=conn.port,
            schema=conn.schema,
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
        call. Every task is billed, so once the request may have reached the server, only an answer that
        proves no task was created counts as a failure (429 or vendor code 006001094, which are retried;
        006001099, 400/422, 401/403, which are raised); anything else (a 5xx, a timeout, a reset, an error
        inside a 2xx, a body that cannot be read) raises :class:`KlingSubmitUncertainError` and is never
        resent.

        :param request: the request, or its documented JSON body.
        :param max_retries: overrides the connection's retry budget for this call.
        :raises pydantic.ValidationError: the request breaks an API rule (the message names the rule).
        :raises ValueError: the request still holds ``s3://`` inputs (resolve them to URLs first).
        :raises KlingSubmitUncertainError: the submit failed in a way that may have created a task.
        :raises KlingAPIError: the API refused the request, proving that it created no task.
        """
        video_request = self._validated(request)
        settings = self.settings
        body = video_request.to_api_body()
        client = self.get_conn()

        def attempt(deadline: float | None) -> str:
            answer = send(
                client,
                settings,
                "POST",
                SUBMIT_PATH,
                what="submit",
                deadline=deadline,
                monotonic=self.monotonic,
                json=body,
            )
            return submitted_task_id(answer, settings)

        task_id = self._retried_call(
            "submit",
            submit=True,
            max_retries=self._budget(settings, max_retries),
            deadline=None,
            external_task_id=video_request.parameters.external_task_id,
        ).run(attempt, self.sleep)
        self.log.info("Submitted Kling task %s", task_id)
        return task_id

    def get_task(
        self, task_id: str, *, max_retries: int | None = None, timeout: float | None = None
    ) -> KlingTask:
        """
        Return a task's status (status queries are free: every retryable failure is retried).

        :param task_id: the API's task id.
        :param max_retries: overrides the connection's retry budget for this call.
        :param timeout: seconds the whole call may take, retries and reading the answers included (each
            request is also bounded by the connection's ``timeout``).
        :raises ValueError: ``task_id`` is not a valid Kling task id.
        :raises KlingNotFoundError: the API does not know the task.
        :raises KlingAPIError: the query failed (after the retries, where retrying can help).
        :raises KlingTransportError: the API could not be reached, or did not answer in time.
        """
        return self._get_task(task_id, max_retries=max_retries, deadline=self._deadline(timeout))

    async def aget_task(
        self,
        task_id: str,
        *,
        max_retries: int | None = None,
        # The hook must know its deadline (not only be cancelled at it): a retry that cannot fit is not
        # slept for, and the last real error is raised instead of a bare cancellation.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> KlingTask:
        """
        Return a task's status without blocking the event loop (what the trigger polls with).

        The whole call (waiting for one of the loop's request slots, the requests, their bodies and the
        retries) ends within ``timeout``: pass what is left of the caller's own wait.

        :param task_id: the API's task id.
        :param max_retries: overrides the connection's retry budget for this call.
        :param timeout: seconds the whole call may take.
        """
        what = self._status_what(task_id)
        deadline = self._deadline(timeout)
        settings = await self.aget_settings()
        sender, slots = await shared_async_pool(settings.conn_id, settings.max_in_flight)

        async def attempt(attempt_deadline: float | None) -> KlingTask:
            answer = await asend(
                sender,
                slots,
                settings,
                "GET",
                STATUS_PATH,
                what=what,
                deadline=attempt_deadline,
                monotonic=self.monotonic,
                params={"task_id": task_id},
            )
            return task_from_answer(answer, settings, what, task_id)

        retried = self._retried_call(
            what, submit=False, max_retries=self._budget(settings, max_retries), deadline=deadline
        )
        return await retried.arun(attempt, self.async_sleep)

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
        unknown status keeps polling. No query, retry or read outlives ``timeout``. The status is logged
        (INFO) when it changes, each poll at DEBUG.

        :param task_id: the API's task id.
        :param poll_interval: seconds between two status queries.
        :param timeout: seconds the whole wait may take.
        :raises KlingTaskTimeoutError: the task did not finish within ``timeout``.
        :raises KlingTaskNotReadyError: the task succeeded without any result URL.
        """
        poll_interval = check_poll_interval(poll_interval)
        timeout = check_wait_timeout(timeout)
        deadline = self.monotonic() + timeout
        last_status: str | None = None
        while True:
            if deadline - self.monotonic() <= 0:
                raise KlingTaskTimeoutError(task_id, timeout, last_status)
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
                    return checked_finished_task(task)
                if task.status.value != last_status:
                    self.log.info("Kling task %s is %s", task_id, task.status.value)
                last_status = task.status.value
            self.sleep(max(0.0, min(poll_interval, deadline - self.monotonic())))

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

    def stream_result(
        self,
        url: str,
        *,
        kling_task_id: str,
        max_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_DOWNLOAD_ATTEMPTS,
        retry_delay: float = DEFAULT_DOWNLOAD_RETRY_DELAY,
    ) -> KlingResultStream:
        """
        Open a result URL for download; use the stream as a context manager and iterate over its bytes.

        ``with hook.stream_result(url, kling_task_id=tid) as result: for chunk in result: ...``. The
        download is bounded (``max_bytes``, ``timeout``), follows at most a few redirects by hand (never to
        link-local addresses, never from https to http, never to loopback or private addresses unless the
        URL itself is on one), decodes gzip itself, proves the body complete, and resumes a broken body
        with ``Range`` (see :class:`~airflow_provider_kling.hooks._download.KlingResultStream`). Result URLs
        are presigned: the API key is sent only when the URL is under the API base URL, and never on a
        redirect.

        :param url: the result URL (``output.urls[i]`` of a finished task).
        :param kling_task_id: the task the URL belongs to, for the error messages.
        :param max_bytes: the largest video accepted, in bytes (default 1 GiB).
        :param timeout: seconds the whole download may take, resumes included (default 1800).
        :param max_attempts: requests in all: the first one and the ``Range`` resumes (default 3).
        :param retry_delay: seconds before the first resume, doubling after each (default 1).
        :raises ValueError: the URL is not an http(s) URL, or a bound is invalid.
        :raises KlingResultExpiredError: the URL answered 403, 404 or 410: it has expired.
        :raises KlingResultDownloadError: the video could not be had whole within the bounds.
        """
        check_kling_task_id(kling_task_id)
        settings = self.settings
        limits = DownloadLimits(
            max_bytes=max_bytes,
            timeout=timeout,
            read_timeout=settings.timeout,
            max_attempts=max_attempts,
            retry_delay=retry_delay,
        )
        checked_result_url(url)
        headers = {"Authorization": settings.api_key} if settings.is_api_url(url) else {}
        stream = KlingResultStream(
            self.get_conn(),
            url,
            kling_task_id=kling_task_id,
            headers=headers,
            limits=limits,
            sleep=self.sleep,
            monotonic=self.monotonic,
        )
        self.log.info("Downloading the result of Kling task %s from %s", kling_task_id, stream.url)
        return stream

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

    def _deadline(self, timeout: float | None) -> float | None:
        """The monotonic time a call given ``timeout`` seconds must end by (``None``: no deadline)."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout):
            raise ValueError(f"timeout must be a finite number of seconds, got {timeout!r}")
        return self.monotonic() + timeout

    def _get_task(self, task_id: str, *, max_retries: int | None, deadline: float | None) -> KlingTask:
        what = self._status_what(task_id)
        settings = self.settings
        client = self.get_conn()

        def attempt(attempt_deadline: float | None) -> KlingTask:
            answer = send(
                client,
                settings,
                "GET",
                STATUS_PATH,
                what=what,
                deadline=attempt_deadline,
                monotonic=self.monotonic,
                params={"task_id": task_id},
            )
            return task_from_answer(answer, settings, what, task_id)

        retried = self._retried_call(
            what, submit=False, max_retries=self._budget(settings, max_retries), deadline=deadline
        )
        return retried.run(attempt, self.sleep)

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
        return f"status query of task {check_kling_task_id(task_id, field='task_id')}"

    @staticmethod
    def _budget(settings: KlingSettings, max_retries: int | None) -> int:
        if max_retries is None:
            return settings.max_retries
        return check_max_retries(max_retries, "max_retries")

    def _retried_call(
        self,
        what: str,
        *,
        submit: bool,
        max_retries: int,
        deadline: float | None,
        external_task_id: str | None = None,
    ) -> RetriedCall:
        """The retry loop of one call, on the hook's policy, clock and log as they are now (injectable)."""
        return RetriedCall(
            what=what,
            submit=submit,
            max_retries=max_retries,
            deadline=deadline,
            policy=self.retry_policy,
            monotonic=self.monotonic,
            log=self.log,
            external_task_id=external_task_id,
        )


def checked_finished_task(task: KlingTask) -> KlingTask:
    """
    Return a finished task, or raise when it succeeded without any result URL (nothing can be copied).

    :param task: a task in a terminal status.
    :raises KlingTaskNotReadyError: ``Success`` with an empty ``urls``.
    """
    if task.status == TaskStatus.SUCCESS and not task.urls:
        raise no_result_error(task.task_id)
    return task
