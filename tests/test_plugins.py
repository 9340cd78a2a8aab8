"""A new objective, a new dataset and a new model are each one module plus one registry entry.

The three modules below are written to ``tmp_path`` as a user would write them, imported by the
registries through their ``"module:attribute"`` names, and given their own parameters (a
dataclass next to each entry, as in ``distributed_adcs/specs/``). A tiny in-process job then
trains with all three, selecting CRAIG coresets from the new objective's closed-form logit
gradients and the new model's penultimate features.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient

from distributed_adcs.config import ConfigError, load_config
from distributed_adcs.errors import check
from distributed_adcs.specs.datasets import DATASETS, DatasetSpec
from distributed_adcs.specs.models import MODELS, ModelSpec
from distributed_adcs.specs.objectives import OBJECTIVES, ObjectiveSpec

from helpers import TINY

# An objective: cross-entropy against smoothed labels on an l-inf PGD example. What the
# registry asks for: the attack (_inner_max), one loss per example, and its closed-form
# gradient with respect to the logits (the coreset embeddings are built from it).
OBJECTIVE = '''
import torch
import torch.nn.functional as F

from distributed_adcs.attacks import attack
from distributed_adcs.objectives.base import Objective, cross_entropy_attack_loss

CALLS = {"logit_grads": 0}


def _targets(logits, y, smoothing):
    k = logits.shape[1]
    return (1 - smoothing) * F.one_hot(y, k).to(logits.dtype) + smoothing / k


class SmoothedPGD(Objective):
    def _inner_max(self, model, x, y, generator):
        return attack(model, x, cross_entropy_attack_loss(y), geometry=self.norm, epsilon=self.spec.epsilon,
                      step_size=self.step_size, steps=self.spec.steps, generator=generator)

    def loss_from_logits(self, logits_clean, logits_adv, y):
        targets = _targets(logits_adv, y, self.spec.params.smoothing)
        return -(targets * F.log_softmax(logits_adv, dim=1)).sum(dim=1)

    def logit_grads(self, logits_clean, logits_adv, y):
        CALLS["logit_grads"] += 1
        probs = torch.softmax(logits_adv.detach(), dim=1)
        return None, probs - _targets(probs, y, self.spec.params.smoothing)
'''

# A dataset: four classes of 12x12 grey images, a bright quadrant (the class) in noise.
DATASET = '''
import torch

from distributed_adcs.data.types import RawDataset, channel_stats


def _images(n, noise, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 1, 12, 12, generator=g) * noise
    for k in range(4):
        rows, cols = divmod(k, 2)
        images[labels == k, :, 6 * rows:6 * rows + 6, 6 * cols:6 * cols + 6] += 1 - noise
    return (images.clamp(0, 1) * 255).to(torch.uint8), labels


def load_quadrants(root, download, *, noise, limit=None, val_size=0, test_limit=None):
    train_images, train_labels = _images(600, noise, seed=0)
    test_images, test_labels = _images(200, noise, seed=1)
    mean, std = channel_stats(train_images)
    return RawDataset(train_images, train_labels, test_images, test_labels, 4, mean, std)
'''

# A model: one hidden layer. What the registry asks for: normalisation inside, a linear head
# on the penultimate features, forward_features and perceptual_modules.
MODEL = '''
from torch import nn

from distributed_adcs.models.base import AdcsModel

BUILT = []


class TinyMLP(AdcsModel):
    def __init__(self, shape, hidden):
        super().__init__(shape)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(shape.in_channels * shape.image_size**2, hidden),
                                    nn.ReLU())
        self.head = nn.Linear(hidden, shape.num_classes)

    def forward_features(self, x):
        return self.hidden(x)

    def perceptual_modules(self):
        return [self.hidden]


def tiny_mlp(shape, *, hidden):
    BUILT.append(hidden)
    return TinyMLP(shape, hidden)
'''


@dataclass(frozen=True, kw_only=True, slots=True)
class SmoothingParams:
    smoothing: float = 0.1  # the label mass spread evenly over the classes

    def __post_init__(self) -> None:
        check(0 <= self.smoothing < 1, "smoothing", f"must be in [0, 1), got {self.smoothing}")


@dataclass(frozen=True, kw_only=True, slots=True)
class QuadrantParams:
    noise: float = 0.3  # the noise amplitude in [0, 1] pixel units


@dataclass(frozen=True, kw_only=True, slots=True)
class MLPParams:
    hidden: int = 32


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The three modules on the import path and their three registry entries."""
    for name, source in [("adcs_smoothed_pgd", OBJECTIVE), ("adcs_quadrants", DATASET), ("adcs_tiny_mlp", MODEL)]:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(OBJECTIVES, "smoothed_pgd", ObjectiveSpec(
        name="smoothed_pgd", summary="CE against smoothed labels on an l-inf PGD example",
        build="adcs_smoothed_pgd:SmoothedPGD", norm="linf", params=SmoothingParams))
    monkeypatch.setitem(DATASETS, "quadrants", DatasetSpec(
        name="quadrants", summary="a bright quadrant in noise, 4 classes", loader="adcs_quadrants:load_quadrants",
        image_shape=(1, 12, 12), params=QuadrantParams))
    monkeypatch.setitem(MODELS, "tiny_mlp", ModelSpec(
        name="tiny_mlp", summary="one hidden layer", build="adcs_tiny_mlp:tiny_mlp", params=MLPParams))
    yield
    for name in ("adcs_smoothed_pgd", "adcs_quadrants", "adcs_tiny_mlp"):
        sys.modules.pop(name, None)


SETS = ["data.name=quadrants", "data.params.noise=0.4", "model.name=tiny_mlp", "model.params.hidden=24",
        "objective.name=smoothed_pgd", "objective.epsilon=0.05", "objective.params.smoothing=0.2"]


def test_the_config_checks_the_new_entries_before_anything_loads(plugins):
    cfg = load_config(None, SETS)
    assert (cfg.data.params, cfg.model.params, cfg.objective.params) == (
        QuadrantParams(noise=0.4), MLPParams(hidden=24), SmoothingParams(smoothing=0.2))
    assert "adcs_smoothed_pgd" not in sys.modules and "adcs_tiny_mlp" not in sys.modules  # named, not imported
    for extra, message in [
        (["objective.params.smoothing=1.5"], "objective.params.smoothing: must be in [0, 1)"),
        (["model.params.depth=10"], "model.params.depth: unknown key (valid for tiny_mlp: hidden)"),
        (["objective.epsilon=2"], "objective.epsilon: an l-inf radius"),  # the entry's norm decides
        # the dataset's image shape bounds an l2 radius: sqrt(1 * 12 * 12) = 12
        (["objective.name=pgd_l2", "objective.params=null", "objective.epsilon=12.5"],
         "objective.epsilon: an l2 radius on quadrants must be below sqrt(C*H*W) = 12.0"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [*SETS, *extra])
        assert str(err.value).startswith(message), str(err.value)


def test_a_job_trains_with_a_new_objective_dataset_and_model(plugins, tmp_path, mlflow_uri):
    from distributed_adcs.run import train

    cfg = load_config("configs/quickstart.yaml", [
        *TINY, *SETS, "data.limit=300", "data.val_size=100", "data.augment=auto", "train.epochs=2",
        "coreset.method=craig", "coreset.fraction=0.3", "coreset.warmup_epochs=1", "coreset.every=1",
        "coreset.embedding=last_layer", f"mlflow.tracking_uri={mlflow_uri}", f"train.output_dir={tmp_path / 'runs'}"])
    run = MlflowClient(mlflow_uri).get_run(train(cfg))
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["data.params.noise"], params["model.params.hidden"], params["objective.params.smoothing"]) == (
        "0.4", "24", "0.2")
    assert set(sys.modules["adcs_tiny_mlp"].BUILT) == {24}  # the model the job trained is the entry's
    assert sys.modules["adcs_smoothed_pgd"].CALLS["logit_grads"] > 0  # the selection embedded with it
    client = MlflowClient(mlflow_uri)
    examples = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_examples")}
    assert examples == {0: 300, 1: 90}  # a full warm-up epoch, then the 30% CRAIG coreset
    assert 0 <= run.data.metrics["test_clean_acc"] <= 1
