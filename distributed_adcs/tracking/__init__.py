"""Experiment tracking. Only this package imports MLflow."""

from .mlflow_run import RunTracker, default_tracking_uri, resolve_tracking_uri, store_warnings

__all__ = ["RunTracker", "default_tracking_uri", "resolve_tracking_uri", "store_warnings"]
