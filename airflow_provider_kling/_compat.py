"""
What differs between the Airflow minors the provider supports (3.0 to 3.3), behind one name each.

Everything else of Airflow's SDK comes from ``airflow.providers.common.compat.sdk``; these names are not
there (yet), so each is taken from where the running Airflow keeps it. ``make compat`` runs the unit tests
of the operator, sensor, trigger and transfer on every supported minor.
"""

from __future__ import annotations

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout
except ImportError:  # Airflow 3.0, 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        TaskDeferralError,
        TaskDeferralTimeout,
    )

__all__ = ["TaskDeferralError", "TaskDeferralTimeout", "amask_secret"]


async def amask_secret(secret: str) -> None:
    """
    Register ``secret`` with Airflow's secrets masker from a coroutine, without blocking the event loop.

    Airflow 3.3's ``airflow.sdk.log.amask_secret`` is awaited where it exists. Before 3.3, the synchronous
    ``mask_secret`` runs in a worker thread (it may talk to the supervisor synchronously, which must not
    happen on the triggerer's loop), as common-compat's ``get_async_connection`` does for connections.

    :param secret: the value to redact from every log line.
    """
    try:
        from airflow.sdk.log import amask_secret as airflow_amask_secret
    except ImportError:  # Airflow < 3.3
        from airflow.providers.common.compat.sdk import mask_secret
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret)
        return
    await airflow_amask_secret(secret)
