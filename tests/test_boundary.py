"""Per-example extra steps near the boundary (objective.boundary_share, engine/boundary.py):
only the chosen share of each batch takes them (the pass counters show it exactly), chosen by
the margin the update's forward recorded in the ledger, never-seen examples first."""

from __future__ import annotations

import math

import pytest
import torch

from distributed_adcs.config import ConfigError, load_config
from distributed_adcs.engine.boundary import MARGIN, margins, nearest
from distributed_adcs.engine.build import load_job_splits
from distributed_adcs.engine.job import Job
from distributed_adcs.engine.runtime import seed_everything

from helpers import TINY

N, B = 384, 64  # TINY: data.limit=384 in batches of 64


def _job(*overrides):
    cfg = load_config("configs/quickstart.yaml", [*TINY, "objective.name=fgsm_rs", *overrides])
    seed_everything(cfg.seed)
    return Job(cfg, load_job_splits(cfg), torch.device("cpu"))


@pytest.mark.parametrize("objective", ["fgsm_rs", "n_fgsm"])
def test_only_the_chosen_share_pays_the_extra_steps(objective):
    share, steps, epochs = 0.25, 3, 2
    job = _job(f"objective.name={objective}", f"objective.boundary_share={share}",
               f"objective.boundary_steps={steps}")
    plain = _job(f"objective.name={objective}")
    for e in range(epochs):
        job.run_epoch(e)
        plain.run_epoch(e)
    # one attack step and one update per example, plus `steps` for a quarter of each batch (16 of 64)
    assert plain.passes.state() == {"passes_forward": epochs * N * 2, "passes_backward": epochs * N * 2}
    per_example = 2 + share * steps
    assert job.passes.state() == {"passes_forward": epochs * N * per_example,
                                  "passes_backward": epochs * N * per_example}
    # every example trained has its margin from the update's forward; without the option, no field
    recorded = job.ledger.fields[MARGIN]
    assert recorded.shape == (N,) and bool(torch.isfinite(recorded).all()) and recorded.std() > 0
    assert not plain.ledger.has(MARGIN)


def test_nearest_takes_the_smallest_absolute_margins_and_the_unseen_first():
    m = torch.tensor([3.0, -0.1, float("nan"), 0.5, -2.0, 0.2, float("nan")])
    assert nearest(m, 4).tolist() == [2, 6, 1, 5]  # unseen in batch order, then |m| = 0.1, 0.2
    assert nearest(m, 0).tolist() == []
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert margins(logits, torch.tensor([0, 0])).tolist() == [1.0, -3.0]


def test_refine_moves_only_the_chosen_rows_within_the_ball():
    job = _job("objective.boundary_share=0.5", "objective.boundary_steps=3")
    job.run_epoch(0)  # margins for every example
    batch = next(iter(job._batches(job.splits.train, B)))
    index = job.splits.train.indices[:B]
    bare = job.model
    x_adv = job.objective.perturb(bare, batch.x, batch.y, generator=torch.Generator().manual_seed(0))
    out = job.boundary.refine(bare, batch.x, x_adv, batch.y, index, job.ledger)
    chosen = nearest(job.ledger.read(MARGIN, index), B // 2)
    others = torch.ones(B, dtype=torch.bool)
    others[chosen] = False
    assert torch.equal(out[others], x_adv[others])  # the rest keep their single-step example
    assert not torch.equal(out[chosen], x_adv[chosen])
    eps = job.cfg.objective.epsilon
    assert float((out - batch.x).abs().max()) <= eps + 1e-6  # fgsm_rs's ball
    bare.eval()
    with torch.no_grad():
        ce = lambda xs: torch.nn.functional.cross_entropy(bare(xs[chosen]), batch.y[chosen])  # noqa: E731
        assert ce(out) > ce(x_adv)  # three PGD steps from the single-step example climb the loss


def test_extra_steps_are_for_single_step_objectives_and_off_by_default():
    with pytest.raises(ConfigError, match="boundary_share"):
        load_config(None, ["objective.name=pgd_linf", "objective.boundary_share=0.2"])
    cfg = load_config(None, ["objective.name=fgsm_rs"])
    assert cfg.objective.boundary_share == 0
    assert _job().boundary is None
    assert math.isclose(_job("objective.boundary_share=0.2", "objective.boundary_steps=4").boundary.step_size,
                        2.5 * 0.1 / 4)
