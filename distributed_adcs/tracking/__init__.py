"""Experiment tracking. Only this package imports MLflow.

``stores`` (where a job is recorded) loads without MLflow; ``RunTracker`` loads it on first use,
so that the CLI can check a URI before paying for the import.
"""

from .stores import default_tracking_uri, resolve_tracking_uri, store_warnings

__all__ = ["RunTracker", "default_tracking_uri", "resolve_tracking_uri", "store_warnings"]


def __getattr__(name: str):
    if name == "RunTracker":
        from .mlflow_run import RunTracker

        return RunTracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
