"""Where a run's code and data come from, in MLflow's own terms.

Code: MLflow's run-context tags (``mlflow.source.name``, ``mlflow.source.type``, ``mlflow.user``,
from ``mlflow.tracking.context``) and its git tags (``mlflow.source.git.commit``, ``.branch``,
``.repoURL``, by ``mlflow.utils.git_utils``) of the checkout that holds this package, not of the
main script as MLflow's git context would look (for ``adcs`` that is the console script in the
environment's ``bin/``; in a Ray worker, Ray's own). Code that runs from an installed package or
from a directory outside a git checkout gets no git tags.

Data: the training set as the run's dataset input (``context: training``), an MLflow
``MetaDataset`` whose digest is the set's files' (``data.types.DataFiles``: names, sizes and
modification times, so two versions of a Parquet set differ), with the files' count and bytes
as its profile.

A run recorded elsewhere and imported (``benchmarks/quality/records.py``) carries both with it:
:func:`recorded` writes them into its record, :func:`restore` logs them on the new run.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import (MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL,
                                      MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER)

from ..data.types import DataFiles

# the tags a run's code is known by (what an imported run keeps)
SOURCE_TAGS = (MLFLOW_GIT_COMMIT, MLFLOW_GIT_BRANCH, MLFLOW_GIT_REPO_URL, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE,
               MLFLOW_USER)
_PACKAGE = Path(__file__).resolve().parents[1]  # distributed_adcs/


def source_tags(package: Path = _PACKAGE) -> dict[str, str]:
    """MLflow's source tags of this process, with the git tags of the checkout holding ``package``
    (none when it is in no checkout, or git is missing)."""
    from mlflow.tracking.context.git_context import GitRunContext
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url

    # (ignore takes provider classes; MLflow's annotation says instances)
    tags = {k: v for k, v in resolve_tags(ignore=[GitRunContext]).items() if k in SOURCE_TAGS}  # type: ignore[list-item]
    commit = get_git_commit(str(package))  # None outside a checkout, or where the checkout ignores it (a venv)
    if commit:
        git = {MLFLOW_GIT_COMMIT: commit, MLFLOW_GIT_BRANCH: get_git_branch(str(package)),
               MLFLOW_GIT_REPO_URL: get_git_repo_url(str(package))}
        tags.update({k: v for k, v in git.items() if v})
    return tags


def dataset_input(name: str, files: DataFiles, context: str = "training") -> DatasetInput | None:
    """The run input of a data set read from ``files``; None where MLflow has no dataset source
    for their location's scheme (it has for paths, ``file``, ``s3``, ``gs``, ``hdfs``; not ``abfs``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches MLflow's local source twice, and it says so
        warnings.simplefilter("ignore", UserWarning)
        try:
            source = resolve_dataset_source(files.location)
        except MlflowException:
            return None
    # (MLflow's stub declares Dataset.profile abstract; MetaDataset has none, which means no profile)
    meta = MetaDataset(source, name=name, digest=files.digest)._to_mlflow_entity()  # type: ignore[abstract]
    profile = json.dumps({"files": len(files.stamps), "bytes": files.num_bytes})
    dataset = Dataset(meta.name, meta.digest, meta.source_type, meta.source, meta.schema, profile)
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_dataset(client, run_id: str, name: str, files: DataFiles | None) -> None:
    """Log the training set as the run's input (again on a resume: MLflow keeps one copy of an
    input it already has, and a changed set shows as a second version)."""
    if files is None:
        return
    used = dataset_input(name, files)
    if used is None:
        logging.getLogger(__name__).warning("MLflow has no dataset source for %s: the run has no dataset input",
                                            files.location)
    else:
        for attempt in range(3):
            try:
                client.log_inputs(run_id, datasets=[used])
                return
            except MlflowException as err:
                # MLflow's store looks for the data set's row and then inserts it: runs of one
                # experiment opening at the same moment (a sweep's trials) race to insert it, and
                # the loser's insert breaks the table's unique key. Its next try finds the row.
                if attempt == 2 or "unique constraint" not in str(err).lower():
                    raise
                time.sleep(0.2 * (attempt + 1))


def recorded(run) -> dict[str, Any]:
    """A finished run's provenance as JSON: its source tags and dataset inputs."""
    inputs = [{"dataset": {k: getattr(i.dataset, k) for k in ("name", "digest", "source_type", "source", "schema",
                                                              "profile")},
               "tags": {t.key: t.value for t in i.tags}} for i in run.inputs.dataset_inputs]
    return {"tags": {k: v for k, v in run.data.tags.items() if k in SOURCE_TAGS}, "inputs": inputs}


def restore(client, run_id: str, record: dict[str, Any]) -> None:
    """Give run ``run_id`` the provenance ``record`` (of :func:`recorded`) holds."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record.get("tags", {}).items()])
    inputs = [DatasetInput(Dataset(**i["dataset"]), [InputTag(k, v) for k, v in i["tags"].items()])
              for i in record.get("inputs", [])]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
