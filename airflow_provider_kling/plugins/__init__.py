"""The Kling view of the Airflow UI: the plugin, its FastAPI app and pages."""
