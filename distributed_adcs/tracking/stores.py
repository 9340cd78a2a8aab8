"""Where MLflow records a job, decided without importing MLflow (so that a bad URI or a
missing store is reported at once, before any heavy import)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """Absolute form of ``uri``: relative sqlite paths and bare directories are anchored at cwd."""
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def node_local_store(uri: str) -> Path | None:
    """The local path of a store that lives on one machine's disk (a sqlite file, a ``file:``
    or plain directory); None for a tracking server (``http(s)://``, ``databricks``, ...)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        return Path(uri[len("file:"):].removeprefix("//"))
    if uri == "databricks" or uri.startswith("databricks:"):  # MLflow's name for a hosted server
        return None
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return Path(uri)
    return None


def store_warnings(uri: str, joining_cluster: bool) -> list[str]:
    """What is wrong with recording a job that joins a Ray cluster in ``uri``: a file on one node
    (other nodes, and whoever looks later, cannot see it), worse inside a temporary directory
    (a submitted Ray job runs in one, deleted when the job ends)."""
    path = node_local_store(uri)
    if not joining_cluster or path is None:
        return []
    where = path.resolve()
    temporary = any(where.is_relative_to(t) for t in {Path(tempfile.gettempdir()).resolve(), Path("/tmp/ray")})
    out = [f"MLflow records this job in {where}, a file on this node only: on a cluster set mlflow.tracking_uri "
           f"to a tracking server (http://<host>:5000, see cluster/mlflow-server.yaml)"]
    if temporary:
        out.append(f"{where} is inside a temporary directory (a submitted Ray job's working directory is one): "
                   f"the run's record is deleted when the job ends")
    return out


SCHEMES = ("sqlite", "file", "http", "https", "databricks", "databricks-uc", "postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail at once, in one line, on a URI MLflow cannot use: an unknown scheme, or a tracking
    server that does not answer (MLflow itself retries for minutes before it gives up).

    Raises:
        ValueError: naming the URI and the problem.
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme and scheme not in SCHEMES:
        raise ValueError(f"mlflow.tracking_uri {uri}: unknown scheme {scheme!r} (use a sqlite:/// file, "
                         f"a directory, or http(s)://host:port of an MLflow server)")
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # something answers (a proxy, or a server with auth): MLflow reports what it says
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise ValueError(f"mlflow.tracking_uri {uri}: no MLflow tracking server answers ({reason})") from None
