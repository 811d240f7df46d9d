"""Apache Airflow provider for Kling V3 Omni video generation on ModelVerse."""

from __future__ import annotations

__version__ = "0.1.0"
