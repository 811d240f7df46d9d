"""``python -m airflow_provider_kling.testing``: the same as the ``kling-simulator`` command."""

from __future__ import annotations

import sys

from airflow_provider_kling.testing.simulator import main

if __name__ == "__main__":
    sys.exit(main())
