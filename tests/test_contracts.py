"""Exact contracts of the core helpers: error messages, devices, apportionment, embedding
widths, and the training epoch replayed by hand. Written against the survivors of a mutation
run (docs/measurements.md, "Mutation testing"): each test here failed for some mutant."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import make_data, make_model

from distributed_adcs.coreset.budgets import apportion, batches_for_budget, class_budgets, group_shares
from distributed_adcs.coreset.types import (Coreset, check_budget, check_embeddings, check_labels, check_mass,
                                            seeded_generator)

META = torch.device("meta")  # a second device on a CPU-only machine: shows where tensors are made


# -- coreset.types -------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ([[1.0]], "embeddings must be a torch.Tensor, got list"),
    (torch.zeros(3), r"embeddings must be 2-D \[n, d\], got shape \(3,\)"),
    (torch.zeros(2, 2, dtype=torch.int64), "embeddings must be floating point, got torch.int64"),
    (torch.zeros(0, 2), r"embeddings must be non-empty, got shape \(0, 2\)"),
    (torch.zeros(2, 0), r"embeddings must be non-empty, got shape \(2, 0\)"),
    (torch.tensor([[1.0, float("inf")]]), "^embeddings contain NaN or infinite values$"),
])
def test_check_embeddings_messages(value, message):
    with pytest.raises(ValueError, match=message):
        check_embeddings(value)


def test_check_embeddings_accepts_one_row_and_one_column():
    check_embeddings(torch.zeros(1, 1))
    check_embeddings(torch.zeros(1, 5))
    check_embeddings(torch.zeros(5, 1))


@pytest.mark.parametrize("labels, message", [
    ([0, 1], "labels must be a torch.Tensor, got list"),
    (torch.zeros(2, 1, dtype=torch.int64), r"labels must be 1-D \[n\], got shape \(2, 1\)"),
    (torch.zeros(2), r"labels must be an integer tensor \(int64\), got torch.float32"),
    (torch.zeros(2, dtype=torch.complex64), "got torch.complex64"),
    (torch.zeros(2, dtype=torch.bool), "got torch.bool"),
    (torch.zeros(3, dtype=torch.int64), "^labels has 3 entries but embeddings has 2 rows$"),
])
def test_check_labels_messages(labels, message):
    with pytest.raises(ValueError, match=message):
        check_labels(labels, torch.zeros(2, 5))


def test_check_labels_devices():
    with pytest.raises(ValueError, match=r"^labels \(meta\) and embeddings \(cpu\) are on different devices$"):
        check_labels(torch.zeros(2, dtype=torch.int64, device=META), torch.zeros(2, 5))


def test_check_mass_shape_sign_and_device():
    emb = torch.zeros(3, 2)
    assert torch.equal(check_mass(None, emb), torch.ones(3, dtype=torch.float64))
    assert check_mass(torch.tensor([1, 2, 3]), emb).dtype == torch.float64
    assert check_mass(None, torch.empty(3, 2, device=META)).device == META
    assert check_mass(torch.ones(3), torch.empty(3, 2, device=META)).device == META
    with pytest.raises(ValueError, match=r"^mass must have shape \(3,\), got \(2,\)$"):
        check_mass(torch.ones(2), emb)
    for bad in (torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, -1.0, 1.0])):
        with pytest.raises(ValueError, match="^mass must be positive$"):
            check_mass(bad, emb)


def test_check_budget_and_seeded_generator():
    assert check_budget(5, 3) == 3 and check_budget(2, 3) == 2 and isinstance(check_budget(torch.tensor(2).item(), 3), int)
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match=f"^budget must be a positive integer, got {bad!r}$"):
            check_budget(bad, 3)
    assert torch.equal(torch.randperm(9, generator=seeded_generator(4)), torch.randperm(9, generator=seeded_generator(4)))
    for bad in (1.5, True, "3"):
        with pytest.raises(ValueError, match=f"^seed must be an integer, got {bad!r}$"):
            seeded_generator(bad)


def test_coreset_rejects_bad_tensors_with_their_message():
    ok_i, ok_w = torch.arange(3), torch.ones(3)
    with pytest.raises(ValueError, match="^Coreset.indices must be a 1-D int64 tensor$"):
        Coreset(ok_i.int(), ok_w)
    with pytest.raises(ValueError, match="^Coreset.indices must be a 1-D int64 tensor$"):
        Coreset(ok_i[None], ok_w)
    with pytest.raises(ValueError, match="^Coreset.weights must be a 1-D float32 tensor$"):
        Coreset(ok_i, ok_w.double())
    with pytest.raises(ValueError, match="^Coreset.weights must be a 1-D float32 tensor$"):
        Coreset(ok_i, ok_w[None])
    with pytest.raises(ValueError, match=r"^Coreset.indices \(\(3,\)\) and weights \(\(2,\)\) differ in length$"):
        Coreset(ok_i, torch.ones(2))


def test_coreset_from_parts_casts_and_sorts():
    core = Coreset.from_parts([torch.tensor([5, 1], dtype=torch.int32), torch.tensor([3])],
                              [torch.tensor([0.5, 1.5], dtype=torch.float64), torch.tensor([2.0])])
    assert core.indices.tolist() == [1, 3, 5] and core.indices.dtype == torch.int64
    assert core.weights.tolist() == [1.5, 2.0, 0.5] and core.weights.dtype == torch.float32


# -- coreset.budgets -----------------------------------------------------------------------

def test_apportion_is_hamilton_with_ties_to_the_earlier_group():
    assert apportion([1, 1, 1], 2) == [1, 1, 0]  # equal remainders: earlier groups first
    assert apportion([5, 3, 2], 5) == [3, 1, 1]  # quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1; + the largest remainder
    assert apportion([7, 2, 1], 3) == [2, 1, 0]  # quotas 2.1, 0.6, 0.3: one leftover to the 0.6
    assert apportion([2, 9], 6) == [1, 5]  # quotas 1.09, 4.91 -> the larger remainder is the later group
    assert apportion([3, 4], 0) == [0, 0] and apportion([3, 4], 7) == [3, 4]
    for bad in (-1, 8):
        with pytest.raises(ValueError, match=rf"^budget {bad} outside \[0, 7\]$"):
            apportion([3, 4], bad)


def test_batches_for_budget_rounds_half_up_and_never_below_one():
    assert batches_for_budget(0, 10, 4) == 0 and batches_for_budget(-2, 10, 4) == 0
    assert batches_for_budget(1, 10, 4) == 1  # a positive share always gets a batch
    assert batches_for_budget(5, 40, 4) == 1  # 1.25 batches -> 1
    assert batches_for_budget(6, 40, 4) == 2  # 1.5 -> 2 (halves up)
    assert batches_for_budget(9, 40, 4) == 2  # 2.25 -> 2
    assert batches_for_budget(30, 40, 4) == 8  # 7.5 -> 8
    assert batches_for_budget(40, 10, 4) == 3  # capped at the group's ceil(10 / 4) batches


def test_class_budgets_messages_and_order():
    for bad in (torch.zeros(3), torch.zeros(3, 1, dtype=torch.int64), torch.zeros(3, dtype=torch.complex64)):
        with pytest.raises(ValueError, match="^labels must be a 1-D integer tensor$"):
            class_budgets(bad, 2)
    with pytest.raises(ValueError, match="^labels must be non-empty$"):
        class_budgets(torch.zeros(0, dtype=torch.int64), 1)
    assert class_budgets(torch.tensor([7]), 1) == {7: 1}  # one example is a valid set
    shares = class_budgets(torch.tensor([9, 2, 9, 5, 2, 9]), 3)
    assert list(shares) == [2, 5, 9] and shares == {2: 1, 5: 1, 9: 1}  # quotas 1, .5, 1.5: the tie goes to 5


def test_group_shares_members_ascending_and_on_the_labels_device():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (5000,), generator=g)  # many ties: an unstable sort would reorder members
    for members, share in group_shares(labels, 100, per_class=True):
        assert torch.equal(members, members.sort().values)
        assert bool((labels[members] == labels[members[0]]).all())
    (everything, budget), = group_shares(labels, 100, per_class=False)
    assert torch.equal(everything, torch.arange(5000)) and budget == 100
    (meta_members, _), = group_shares(torch.empty(4, dtype=torch.int64, device=META), 2, per_class=False)
    assert meta_members.device == META


# -- embeddings ----------------------------------------------------------------------------

def test_embedding_dim_matches_what_embed_from_logits_returns():
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.embeddings import EMBEDDING_KINDS, embed_from_logits, embedding_dim
    from distributed_adcs.objectives import build_objective

    c, d, b = 4, 6, 3
    z, h, y = torch.randn(b, c), torch.randn(b, d), torch.tensor([0, 2, 3])
    for name in ("pgd_linf", "trades"):
        obj = build_objective(ObjectiveConfig(name=name, epsilon=0.1, steps=1))
        for kind in EMBEDDING_KINDS:
            emb = embed_from_logits(obj, y, z, h, z + 0.1, h + 0.1, kind=kind)
            assert emb.shape == (b, embedding_dim(kind, c, d)), (name, kind)
        assert torch.equal(embed_from_logits(obj, y, z, h, z + 0.1, h + 0.1),
                           embed_from_logits(obj, y, z, h, z + 0.1, h + 0.1, kind="logits"))  # the default
    assert embedding_dim("last_layer", 10, 3) == 40 and embedding_dim("last_layer_class", 10, 3) == 13
    for call in (lambda: embedding_dim("nope", c, d), lambda: embed_from_logits(obj, y, z, h, kind="nope")):
        with pytest.raises(ValueError, match="^unknown embedding kind 'nope'; valid: logits, last_layer, last_layer_class$"):
            call()


def test_last_layer_embedding_is_the_outer_product():
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.embeddings import embed_from_logits
    from distributed_adcs.objectives import build_objective

    obj = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=1))
    z, h, y = torch.randn(2, 3), torch.randn(2, 4), torch.tensor([1, 0])
    g = torch.softmax(z, 1) - torch.nn.functional.one_hot(y, 3)
    emb = embed_from_logits(obj, y, z, h, kind="last_layer")
    torch.testing.assert_close(emb[:, 3:].reshape(2, 3, 4), g[:, :, None] * h[:, None, :])


def test_embed_batch_reports_attack_and_embed_seconds():
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.embeddings import embed_batch
    from distributed_adcs.objectives import build_objective

    model = make_model().eval()
    x, y = make_data(6)
    seen: dict[str, list[float]] = {}
    for name in ("pgd_linf", "trades"):
        obj = build_objective(ObjectiveConfig(name=name, epsilon=0.1, steps=3))
        emb = embed_batch(model, obj, x, y, generator=torch.Generator().manual_seed(0),
                          clock=lambda phase, s: seen.setdefault(phase, []).append(s))
        assert emb.shape == (6, 10) and torch.isfinite(emb).all()
    assert sorted(seen) == ["attack", "embed"]
    assert all(0 < s < 60 for values in seen.values() for s in values) and len(seen["attack"]) == 2


# -- engine.epoch: one epoch replayed by hand ------------------------------------------------

def _batches(sizes, seed=0):
    from distributed_adcs.data.batches import Batch

    out, start = [], 0
    for i, n in enumerate(sizes):
        x, y = make_data(n, seed=seed + i)
        w = torch.linspace(0.5, 1.5, n)
        out.append(Batch(x=x, y=y, index=torch.arange(start, start + n), position=torch.arange(start, start + n), weight=w))
        start += n
    return out


@pytest.mark.parametrize("sizes", [[8, 8, 5], [1]])
def test_train_epoch_matches_a_hand_replay(sizes):
    from distributed_adcs.config import ObjectiveConfig, TrainConfig
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule
    from distributed_adcs.objectives import build_objective

    obj = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=2))
    tcfg = TrainConfig(lr=0.1, schedule="cosine", epochs=4, weight_decay=0.0)
    model, twin = make_model(), make_model()
    batches = _batches(sizes)
    # the replay: per batch, lr at the fractional epoch, attack, weighted mean loss, one SGD step
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    sched_t = EpochSchedule(opt_t, tcfg)
    gen_t = torch.Generator().manual_seed(3)
    losses, correct, lrs = [], 0, []
    for i, b in enumerate(batches):
        sched_t.set(1 + i / len(batches))
        lrs.append(opt_t.param_groups[0]["lr"])
        x_adv = obj.perturb(twin, b.x, b.y, generator=gen_t)
        twin.train()
        logits = twin(x_adv)
        loss = (torch.nn.functional.cross_entropy(logits, b.y, reduction="none") * b.weight).mean()
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        losses.append(loss.item() * len(b.y))
        correct += (logits.argmax(1) == b.y).sum().item()
    assert len(set(lrs)) == len(lrs)  # the schedule moves within the epoch (cosine)

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stats = train_epoch(model, obj, batches, opt, EpochSchedule(opt, tcfg), 1, len(batches),
                        generator=torch.Generator().manual_seed(3))
    n = sum(sizes)
    assert stats.examples == n
    assert stats.loss == pytest.approx(sum(losses) / n, rel=1e-5)
    assert stats.adv_accuracy == pytest.approx(correct / n)
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    assert 0 < stats.attack_seconds < stats.seconds
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_train_epoch_attack_time_is_summed_over_batches():
    import time

    from distributed_adcs.config import ObjectiveConfig, TrainConfig
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule
    from distributed_adcs.objectives import build_objective

    class SlowAttack:
        """The real objective with a fixed 50 ms added to every attack."""

        def __init__(self, inner):
            self.inner = inner

        def perturb(self, *args, **kwargs):
            time.sleep(0.05)
            return self.inner.perturb(*args, **kwargs)

        def update_loss(self, *args):
            return self.inner.update_loss(*args)

    obj = SlowAttack(build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=1)))
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = train_epoch(model, obj, _batches([4, 4, 4]), opt, EpochSchedule(opt, TrainConfig(schedule="constant")), 0, 3)
    assert stats.attack_seconds >= 0.15


def test_train_epoch_weights_change_the_update():
    from distributed_adcs.config import ObjectiveConfig, TrainConfig
    from distributed_adcs.engine.epoch import train_epoch
    from distributed_adcs.engine.schedule import EpochSchedule
    from distributed_adcs.objectives import build_objective

    obj = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=1, random_start=False))
    results = []
    for scale in (1.0, 2.0):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = [copy.copy(b) for b in _batches([6])]
        object.__setattr__(batches[0], "weight", batches[0].weight * scale)
        stats = train_epoch(model, obj, batches, opt, EpochSchedule(opt, TrainConfig(schedule="constant", lr=0.1)), 0, 1)
        results.append((stats.loss, [p.detach().clone() for p in model.parameters()]))
    assert results[1][0] == pytest.approx(2 * results[0][0], rel=1e-5)  # the loss is the weighted mean
    assert not all(torch.allclose(a, b) for a, b in zip(results[0][1], results[1][1]))


# -- objectives: the starts each one documents ----------------------------------------------

def test_trades_and_fgsm_rs_always_start_randomly():
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.objectives import build_objective

    model = make_model().eval()
    x, y = make_data(6)
    for name, steps in (("trades", 0), ("fgsm_rs", 5)):
        obj = build_objective(ObjectiveConfig(name=name, epsilon=0.1, steps=steps, random_start=False))
        a = obj.perturb(model, x, y, torch.Generator().manual_seed(0))
        b = obj.perturb(model, x, y, torch.Generator().manual_seed(1))
        assert not torch.equal(a, b), name  # the start is random whatever random_start says
        assert float((a - x).abs().max()) <= 0.1 + 1e-6
    pgd = build_objective(ObjectiveConfig(name="pgd_linf", epsilon=0.1, steps=0, random_start=False))
    assert torch.equal(pgd.perturb(model, x, y, torch.Generator().manual_seed(0)), x)  # PGD honours it


def test_trades_needs_clean_logits():
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.objectives import build_objective

    obj = build_objective(ObjectiveConfig(name="trades", epsilon=0.1, steps=1))
    z = torch.randn(3, 4)
    for call in (lambda: obj.loss_from_logits(None, z, torch.zeros(3, dtype=torch.int64)),
                 lambda: obj.logit_grads(None, z, torch.zeros(3, dtype=torch.int64))):
        with pytest.raises(ValueError, match="^TRADES needs the clean logits$"):
            call()


# What each Ray process imports before it can start: a second here is a second of every job's
# start-up (benchmarks/bench_startup.py). A Train worker needs torch and Ray Train, not
# torchvision (its torch._dynamo import cost a second), MLflow or matplotlib; the controller
# unpickles the MLflow reporter before it starts the worker group, so that must not load MLflow.
@pytest.mark.parametrize("module, forbidden", [
    ("distributed_adcs.distributed.trainer", ("torchvision", "mlflow", "matplotlib")),
    ("distributed_adcs.distributed.reporter", ("torchvision", "mlflow", "matplotlib")),
])
def test_what_a_ray_process_imports_at_start_up(module, forbidden):
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))  # a list of module names printed above
    assert not loaded & set(forbidden), sorted(loaded & set(forbidden))
