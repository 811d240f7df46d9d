"""The provider's manifest, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_kling import __version__
from airflow_provider_kling.constants import (
    CONN_TYPE,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    HOOK_NAME,
    MAX_IN_FLIGHT_LIMIT,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT,
)

INTEGRATION_NAME = "Kling V3 Omni (ModelVerse)"

#: The connection form's field behaviour (declared here only: Airflow 3.2 deprecated the hook method).
CONNECTION_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": f"{DEFAULT_BASE_URL} (leave empty for the default)",
        "password": "ModelVerse API key (sent bare in the Authorization header)",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's manifest: package, versions, modules, connection type and its form."""
    return {
        "package-name": "airflow-provider-kling",
        "name": "Kling (ModelVerse)",
        "description": (
            "Generate videos with Kling V3 Omni on the ModelVerse task API: submit, wait in the triggerer, "
            "land the results in S3."
        ),
        "state": "ready",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION_NAME,
                "external-doc-url": "https://www.modelverse.cn/",
                "tags": ["ai", "service"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION_NAME,
                "python-modules": ["airflow_provider_kling.operators.kling"],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION_NAME,
                "python-modules": ["airflow_provider_kling.sensors.kling"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION_NAME,
                "python-modules": ["airflow_provider_kling.hooks.kling"],
            }
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION_NAME,
                "python-modules": ["airflow_provider_kling.triggers.kling"],
            }
        ],
        "transfers": [
            {
                "source-integration-name": INTEGRATION_NAME,
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": "airflow_provider_kling.transfers.kling_to_s3",
            }
        ],
        "extra-links": [
            "airflow_provider_kling.links.kling.KlingVideoLink",
            "airflow_provider_kling.links.kling.KlingTaskStatusLink",
        ],
        "plugins": [
            {"name": "kling_view", "plugin-class": "airflow_provider_kling.plugins.kling.KlingViewPlugin"},
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_kling.hooks.kling.KlingHook",
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": copy.deepcopy(CONNECTION_UI_FIELD_BEHAVIOUR),
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": (
                            "Timeout of one HTTP request to the API, in seconds "
                            f"(default {DEFAULT_TIMEOUT:g})."
                        ),
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": (
                            f"How many times a failed request is retried (default {DEFAULT_MAX_RETRIES}). A "
                            "submit is only retried where the API provably created no task."
                        ),
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_RETRIES_LIMIT},
                    },
                    "max_in_flight": {
                        "label": "Max requests in flight (triggerer)",
                        "description": (
                            "Status queries of this connection in flight at once in one triggerer "
                            f"(default {DEFAULT_MAX_IN_FLIGHT}): each is an open socket. Size it to queries "
                            "per second x API latency: 10,000 waits polling every 30 s at 200 ms need 67."
                        ),
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_IN_FLIGHT_LIMIT},
                    },
                },
            }
        ],
    }
