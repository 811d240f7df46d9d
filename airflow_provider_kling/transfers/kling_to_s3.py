"""
Copy the result videos of a finished Kling task into S3: the :class:`KlingToS3Operator`.

Result URLs are temporary (about :data:`~airflow_provider_kling.constants.RESULT_URL_TTL_HOURS` hours), so
this is where a user's videos are saved or lost. The operator reads the task, copies every result URL,
emits one Asset event per landed object and returns the ``s3://`` URIs. The copying itself is done by the
streaming multipart upload engine, :class:`~airflow_provider_kling.transfers._multipart.S3StreamUploader`
(streamed in constant memory, a checksum per part, abort on failure, conditional writes; its module
docstring says why it is not ``S3Hook.load_file_obj``) from the hook's result stream, which resumes a
broken download with ``Range`` itself, onto what
:mod:`airflow_provider_kling.transfers._s3_objects` describes (the target, the landed object, the metadata).

Every DAG file that uses the operator imports this module at every parse, so the engine is imported only
when a copy runs (``KlingToS3Operator.uploader``). Its public names stay importable from here, loaded on
first use: ``S3StreamUploader``, ``ResultBytes`` and ``choose_part_size``.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowFailException, Asset, AssetAlias, BaseOperator

from airflow_provider_kling.constants import DEFAULT_CONN_ID, MODEL_NAME
from airflow_provider_kling.exceptions import (
    KlingResultExpiredError,
    KlingS3KeyExistsError,
    KlingTaskFailedError,
    KlingTaskNotReadyError,
)
from airflow_provider_kling.hooks._limits import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_RESULT_BYTES,
    DownloadLimits,
)
from airflow_provider_kling.transfers._s3_objects import (
    DEFAULT_PART_SIZE,
    VIDEO_CONTENT_TYPE,
    LandedObject,
    S3Target,
    build_metadata,
    encode_metadata_value,
    render_metadata,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_kling.hooks._download import KlingResultStream
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingTask
    from airflow_provider_kling.transfers._multipart import ResultBytes, S3StreamUploader, choose_part_size
    from airflow_provider_kling.transfers._s3_objects import ChecksumAlgorithm

#: The ``AssetAlias`` the operator emits its events under, by default.
DEFAULT_ASSET_ALIAS = "kling_videos"
#: Default key layout: one folder per Kling task (task ids are unique, so runs, map indexes and results
#: never collide, and a retried copy of the same task lands on the same keys: an idempotent no-op).
DEFAULT_S3_KEY = "kling/{{ dag.dag_id }}/{kling_task_id}/{index}.mp4"
#: The S3 metadata key naming the task instance that wrote an object (a SHA-256 of its DAG id, run id,
#: task id and map index): a copy skipped because the object is there emits an Asset event only when that
#: task instance wrote it (an earlier try, whose events Airflow never recorded since it did not succeed).
WRITER_METADATA_KEY = "kling-written-by"


def check_s3_key(key: str) -> str:
    """
    Return an object key built from templates, or raise if it could land somewhere unintended.

    Refused: an empty key, a leading ``/``, empty segments (``a//b``), ``.`` or ``..`` segments (S3 keeps
    them literally, but tools that map keys to paths do not), and control characters.

    :param key: the rendered key.
    :raises ValueError: the key is one of those.
    """
    problem = None
    if not key:
        problem = "it is empty"
    elif key.startswith("/"):
        problem = "it starts with '/'"
    elif any(segment in ("", ".", "..") for segment in key.split("/")[:-1]) or key.split("/")[-1] in (
        ".",
        "..",
    ):
        problem = "it has an empty, '.' or '..' segment"
    elif any(ord(char) < 32 or ord(char) == 127 for char in key):
        problem = "it holds a control character"
    elif len(key.encode()) > 1024:
        problem = "it is longer than S3's 1,024 bytes"
    if problem:
        raise ValueError(f"s3_key {key[:200]!r} cannot be used: {problem}")
    return key


def _parse_bool(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"replace must be a boolean, not {value!r}")


class KlingToS3Operator(BaseOperator):
    """
    Copy every result video of a finished Kling task into S3, streamed in constant memory and verified.

    The download (``KlingHook.stream_result``) flows straight into an S3 multipart upload (``S3Hook``'s
    client) with a checksum per part; the byte count is checked against ``Content-Length``; a broken
    download is resumed with ``Range`` up to ``max_download_attempts`` times; any failure aborts the upload,
    so S3 never holds a partial object or an unfinished upload. Each object gets ``Content-Type: video/mp4``
    and the metadata ``kling-task-id``, ``kling-model``, ``kling-usage-seconds``, ``kling-written-by``
    (:data:`WRITER_METADATA_KEY`) plus ``metadata``. One Asset event per object is emitted on the
    ``AssetAlias`` ``asset_alias`` (its ``extra`` holds the metadata as rendered, Unicode kept, the size and
    the checksum), so DAGs scheduled on that alias run on new videos. Each object is announced once, by the
    task instance that wrote it: a copy skipped because the object is already there emits an event only if
    an earlier try of this task instance wrote it (that try failed, so its events were never recorded).

    Result URLs expire after about 24 hours: run this soon after the task finishes. What can never pass (an
    expired URL, a failed task, another object at a key, an invalid argument) fails without retries; see
    :meth:`execute`.

    :param kling_task_id: the Kling task whose results to copy; it must have succeeded. (templated)
    :param s3_bucket: the destination bucket; ``None`` when ``s3_key`` is a full ``s3://`` URL. (templated)
    :param s3_key: the destination key; ``{index}`` is replaced by the result's index (from 0) and
        ``{kling_task_id}`` by the task id. Required to contain ``{index}`` when the task has several
        results. The default, ``kling/<dag_id>/{kling_task_id}/{index}.mp4``, never collides between runs,
        map indexes or results, and a retried copy lands on the same keys. (templated)
    :param aws_conn_id: the Airflow ``aws`` connection. (templated)
    :param kling_conn_id: the Airflow Kling connection. (templated)
    :param replace: overwrite existing objects. When ``False`` (the default), an existing object of the same
        task and size is kept (an idempotent retry succeeds; its checksum is read back) and a different one
        fails the task without retries; keys are checked before any download. (templated)
    :param metadata: extra S3 metadata, e.g. ``{"prompt-sha256": "{{ ... }}"}``; keys must not start with
        ``kling-``; values that are not printable ASCII are stored RFC 2047-encoded in S3 (the Asset
        events carry them as rendered); at most 2 KB in all (S3's limit). (templated)
    :param asset_alias: name of the ``AssetAlias`` outlet the Asset events go to (``None``: no events).
    :param part_size: preferred multipart part size in bytes (default 8 MiB; raised for very large videos
        to stay within 10,000 parts).
    :param max_concurrency: parts uploaded at once; memory holds at most ``max_concurrency + 2`` parts.
    :param max_download_attempts: requests per result before the copy fails (first try + ``Range`` resumes).
    :param max_download_bytes: the largest result accepted, in bytes (default 1 GiB; a 15 s 1080p video is
        a few tens of MiB): a CDN that sends more is cut off, and nothing lands.
    :param download_timeout: seconds one result's download may take in all, resumes included (default
        1800).
    :param checksum_algorithm: ``"CRC32"`` or ``"SHA256"``, verified by S3 for every part.
    :param download_retry_delay: seconds before the first ``Range`` resume of a broken download, doubling
        after each.
    :param verify: TLS verification for S3 (as ``S3Hook``'s ``verify``).
    :return: the ``s3://`` URIs, in the order of the task's ``urls``.
    """

    template_fields: Sequence[str] = (
        "kling_task_id",
        "s3_bucket",
        "s3_key",
        "aws_conn_id",
        "kling_conn_id",
        "replace",
        "metadata",
    )
    template_fields_renderers = {"metadata": "json"}
    ui_color = "#f4a460"

    def __init__(
        self,
        *,
        kling_task_id: str,
        s3_bucket: str | None = None,
        s3_key: str = DEFAULT_S3_KEY,
        aws_conn_id: str | None = "aws_default",
        kling_conn_id: str = DEFAULT_CONN_ID,
        replace: bool | str = False,
        metadata: dict[str, Any] | None = None,
        asset_alias: str | None = DEFAULT_ASSET_ALIAS,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
        max_download_attempts: int = 3,
        checksum_algorithm: ChecksumAlgorithm = "CRC32",
        download_retry_delay: float = 1.0,
        max_download_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        verify: str | bool | None = None,
        **kwargs: Any,
    ) -> None:
        if asset_alias:
            outlets = kwargs.pop("outlets", None)
            if outlets is None:
                outlets = []
            elif not isinstance(outlets, list | tuple):
                outlets = [outlets]
            kwargs["outlets"] = [*outlets, AssetAlias(asset_alias)]
        super().__init__(**kwargs)
        self.kling_task_id = kling_task_id
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.aws_conn_id = aws_conn_id
        self.kling_conn_id = kling_conn_id
        self.replace = replace
        self.metadata = metadata or {}
        self.asset_alias = asset_alias
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.max_download_attempts = max_download_attempts
        self.checksum_algorithm: ChecksumAlgorithm = checksum_algorithm
        self.download_retry_delay = download_retry_delay
        self.download_limits = DownloadLimits(
            max_bytes=max_download_bytes,
            timeout=download_timeout,
            max_attempts=max_download_attempts,
            retry_delay=download_retry_delay,
        )
        self.verify = verify
        self.landed: list[LandedObject] = []
        self._source_urls: list[str] = []

    @cached_property
    def kling_hook(self) -> KlingHook:
        """The hook of the Kling connection."""
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(kling_conn_id=self.kling_conn_id)

    @cached_property
    def s3_hook(self) -> S3Hook:
        """The hook of the AWS connection."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, verify=self.verify)

    @cached_property
    def uploader(self) -> S3StreamUploader:
        """The streaming upload engine, on the AWS connection's S3 client (its module is imported here)."""
        from airflow_provider_kling.transfers._multipart import S3StreamUploader

        return S3StreamUploader(
            self.s3_hook.get_conn(),
            part_size=self.part_size,
            max_concurrency=self.max_concurrency,
            checksum_algorithm=self.checksum_algorithm,
        )

    def execute(self, context: Context) -> list[str]:
        """
        Copy every result of the task into S3 and return the ``s3://`` URIs, in the order of ``urls``.

        What can never pass raises :class:`~airflow.exceptions.AirflowFailException` (no retries), chained
        from the provider's error: an invalid ``kling_task_id``, key, ``metadata`` or ``replace``; a failed
        task, or one that succeeded without results; an expired result URL; another object at a key with
        ``replace=False``. A task that has not finished raises
        :class:`~airflow_provider_kling.exceptions.KlingTaskNotReadyError`, retried: it may finish.
        """
        try:
            kling_task_id, replace = self._checked_arguments()
            task = self.kling_hook.get_task(kling_task_id)
            targets = self._targets(task, writer=self._writer(context))
            if not replace:
                for target in targets:  # refuse another task's object before any download
                    self.uploader.check_destination(target)
            self._source_urls, self.landed = list(task.urls), []
            for url, target in zip(task.urls, targets, strict=True):
                with self._download(url, task.task_id) as download:
                    landed = self.uploader.upload(download, target, replace=replace)
                self.landed.append(landed)
                self._record(context, landed, target)
            uris = [landed.uri for landed in self.landed]
            self._keep_kling_record(context, task, uris)
            return uris
        except (KlingTaskFailedError, KlingResultExpiredError, KlingS3KeyExistsError) as error:
            raise AirflowFailException(str(error)) from error
        finally:
            self._close_clients()

    def _keep_kling_record(self, context: Context, task: KlingTask, uris: list[str]) -> None:
        """Write the record of the Kling view (``airflow_provider_kling.records``): the landed objects."""
        from airflow_provider_kling.records import landing_record, push_record

        record = landing_record(
            result=task.as_result(),
            s3_uris=uris,
            kling_conn_id=self.kling_conn_id,
            aws_conn_id=self.aws_conn_id,
        )
        push_record(context, record)

    def _checked_arguments(self) -> tuple[str, bool]:
        """The rendered ``kling_task_id`` and ``replace``, checked: wrong ones can never pass."""
        from airflow_provider_kling.models import check_kling_task_id

        try:
            return check_kling_task_id(self.kling_task_id), _parse_bool(self.replace)
        except ValueError as error:
            raise AirflowFailException(str(error)) from error

    def _targets(self, task: KlingTask, *, writer: str) -> list[S3Target]:
        """:meth:`targets_for`, with what can never pass sent down the no-retry path."""
        try:
            return self.targets_for(task, writer=writer)
        except KlingTaskNotReadyError as error:
            if task.status.is_terminal:  # a Success without result URLs stays one
                raise AirflowFailException(str(error)) from error
            raise  # still running: a retry may find it finished
        except ValueError as error:  # the key layout or the metadata, as rendered
            raise AirflowFailException(str(error)) from error

    def _download(self, url: str, kling_task_id: str) -> KlingResultStream:
        limits = self.download_limits
        return self.kling_hook.stream_result(
            url,
            kling_task_id=kling_task_id,
            max_bytes=limits.max_bytes,
            timeout=limits.timeout,
            max_attempts=limits.max_attempts,
            retry_delay=limits.retry_delay,
        )

    def _writer(self, context: Context) -> str:
        """A digest naming this task instance (DAG, run, task, map index): the same for all its tries."""
        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or self.dag_id
        run_id = context.get("run_id") or getattr(ti, "run_id", None)
        map_index = getattr(ti, "map_index", -1)
        identity = "\n".join(str(part) for part in (dag_id, run_id, self.task_id, map_index))
        return hashlib.sha256(identity.encode("utf-8")).hexdigest()

    def _close_clients(self) -> None:
        """Close the HTTP connections the hooks opened (a later call opens new ones)."""
        if "kling_hook" in self.__dict__:
            self.kling_hook.close()
        if "uploader" in self.__dict__:
            self.uploader.s3.close()

    def targets_for(self, task: KlingTask, *, writer: str | None = None) -> list[S3Target]:
        """
        Return where each result of ``task`` goes, checking the task and the key layout first.

        :param task: the task as the status endpoint reports it.
        :param writer: the digest of the task instance that writes the objects, stored as the S3 metadata
            :data:`WRITER_METADATA_KEY` (not in the Asset events); ``None``: not stored.
        :raises KlingTaskFailedError: the task failed.
        :raises KlingTaskNotReadyError: the task is not finished, or has no result URLs.
        :raises ValueError: several results but no ``{index}`` in the key, or invalid metadata.
        """
        from airflow_provider_kling.models import TaskStatus

        if task.status == TaskStatus.FAILURE:
            raise KlingTaskFailedError(task.task_id, task.error_message)
        if task.status != TaskStatus.SUCCESS:
            raise KlingTaskNotReadyError(
                f"Kling task {task.task_id} is {task.status.value}, not Success: wait for it "
                "(KlingTaskSensor or the submit operator) before copying its results"
            )
        if not task.urls:
            raise KlingTaskNotReadyError(f"Kling task {task.task_id} succeeded but reported no result URLs")
        if len(task.urls) > 1 and "{index}" not in self.s3_key:
            raise ValueError(
                f"Kling task {task.task_id} has {len(task.urls)} results: s3_key must contain '{{index}}' so "
                f"they do not overwrite each other (s3_key={self.s3_key!r})"
            )
        kling = {"kling-task-id": task.task_id, "kling-model": MODEL_NAME}
        if task.usage_seconds is not None:
            kling["kling-usage-seconds"] = str(task.usage_seconds)
        rendered = render_metadata(kling, self.metadata)
        metadata = build_metadata({**kling, WRITER_METADATA_KEY: writer} if writer else kling, self.metadata)
        targets = []
        for index in range(len(task.urls)):
            key = self.s3_key.replace("{index}", str(index)).replace("{kling_task_id}", task.task_id)
            if self.s3_bucket is None:
                from airflow.providers.amazon.aws.hooks.s3 import S3Hook

                bucket, key = S3Hook.parse_s3_url(key)
            else:
                bucket = self.s3_bucket
                if urlsplit(key).scheme:
                    raise ValueError("s3_key must be a key, not a URL, when s3_bucket is given")
            targets.append(
                S3Target(
                    bucket=bucket,
                    key=check_s3_key(key),
                    content_type=VIDEO_CONTENT_TYPE,
                    metadata=metadata,
                    rendered_metadata=rendered,
                )
            )
        return targets

    def _record(self, context: Context, landed: LandedObject, target: S3Target) -> None:
        """
        Emit the object's Asset event (on the alias) and report it to hook-level lineage.

        Each object is announced by the task instance that wrote it: a copy skipped because the object is
        already there emits an event only if this task instance wrote it (an earlier try that did not
        succeed, so Airflow never recorded its events); one landed by another task instance (another run,
        map index or DAG) was announced by it, and a second event would re-trigger downstream DAGs.
        """
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        get_hook_lineage_collector().add_output_asset(  # type: ignore[no-untyped-call]
            context=self.s3_hook, scheme="s3", asset_kwargs={"bucket": landed.bucket, "key": landed.key}
        )
        if not self.asset_alias:
            return
        writer = target.metadata.get(WRITER_METADATA_KEY)
        if landed.skipped and (writer is None or landed.metadata.get(WRITER_METADATA_KEY) != writer):
            self.log.info(
                "No Asset event for %s: it was landed and announced by another task instance", landed.uri
            )
            return
        extra: dict[str, Any] = {
            **(target.rendered_metadata or target.metadata),
            "content-type": target.content_type,
            "size-bytes": landed.size,
            "checksum": landed.checksum,
            "skipped": landed.skipped,
        }
        context["outlet_events"][AssetAlias(self.asset_alias)].add(Asset(uri=landed.uri), extra=extra)

    def get_openlineage_facets_on_complete(self, task_instance: object) -> OperatorLineage | None:
        """
        Describe the copy for OpenLineage: result URLs in, S3 objects out.

        Returns ``None`` when the OpenLineage provider is not installed.

        :param task_instance: the finished task instance (unused: the operator remembers what it landed).
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        inputs = []
        for url in self._source_urls:
            parts = urlsplit(url)
            # Result URLs are signed and temporary: the query string is not part of the dataset's name.
            inputs.append(Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path or "/"))
        outputs = [Dataset(namespace=f"s3://{obj.bucket}", name=obj.key) for obj in self.landed]
        return OperatorLineage(inputs=inputs, outputs=outputs)


#: The engine's public names, importable from this module but loaded only on first use (see the docstring).
_LOADED_ON_FIRST_USE = frozenset({"ResultBytes", "S3StreamUploader", "choose_part_size"})


def __getattr__(name: str) -> Any:
    """
    Import the engine the first time one of its public names is asked for from this module.

    :param name: the attribute asked for.
    :raises AttributeError: the module has no such attribute.
    """
    if name in _LOADED_ON_FIRST_USE:
        from airflow_provider_kling.transfers import _multipart

        return getattr(_multipart, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ASSET_ALIAS",
    "DEFAULT_S3_KEY",
    "WRITER_METADATA_KEY",
    "KlingToS3Operator",
    "LandedObject",
    "ResultBytes",
    "S3StreamUploader",
    "S3Target",
    "build_metadata",
    "check_s3_key",
    "choose_part_size",
    "encode_metadata_value",
    "render_metadata",
]
