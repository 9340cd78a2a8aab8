"""The ``adaptive`` selector: quotas, inclusion probabilities, an exact-size unbiased draw."""

from __future__ import annotations

import pytest
import torch

from distributed_adcs.coreset.adaptive import adaptive, class_quotas, inclusion_probabilities, systematic_sample


def test_class_quotas_follow_robust_error_with_a_floor_and_sizes_cap():
    assert class_quotas([100, 100], 50) == [25, 25]  # no errors yet: by size
    assert class_quotas([100, 100], 50, [0.6, 0.2]) == [38, 12]  # 3:1
    assert class_quotas([100, 100], 50, [0.6, 0.0]) == [43, 7]  # error 0 counts as the floor 0.1
    assert class_quotas([10, 100], 50, [0.9, 0.1]) == [10, 40]  # a class never gets more than its size
    assert sum(class_quotas([7, 13, 29], 17, [0.3, 0.5, 0.2])) == 17
    assert class_quotas([3, 4], 100) == [3, 4]
    with pytest.raises(ValueError, match="2 class errors for 3 classes"):
        class_quotas([1, 2, 3], 2, [0.1, 0.2])


def test_inclusion_probabilities_sum_to_k_capped_at_one():
    q = torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    pi = inclusion_probabilities(q, 3)
    assert float(pi.sum()) == pytest.approx(3.0) and float(pi.max()) <= 1.0
    assert pi[0] == 1.0 and torch.allclose(pi[1:5], torch.full((4,), 0.5, dtype=torch.float64)) and pi[5] == 0
    assert torch.equal(inclusion_probabilities(q, 6), torch.ones(6, dtype=torch.float64))
    zeros = inclusion_probabilities(torch.zeros(4), 2)
    assert torch.allclose(zeros, torch.full((4,), 0.5, dtype=torch.float64))


def test_systematic_sample_has_exact_size_and_the_inclusion_probabilities():
    pi = inclusion_probabilities(torch.tensor([5.0, 3.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]), 4)
    counts = torch.zeros(8)
    draws = 4000
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        s = systematic_sample(pi, g)
        assert s.numel() == 4 and s.unique().numel() == 4
        counts[s] += 1
    torch.testing.assert_close(counts / draws, pi.float(), atol=0.03, rtol=0)


def test_adaptive_is_unbiased_visits_unrecorded_and_respects_quotas():
    g = torch.Generator().manual_seed(1)
    n = 300
    labels = torch.randint(0, 3, (n,), generator=g)
    losses = torch.rand(n, generator=g) ** 3 * 4  # skewed, as adversarial losses are
    scores = losses.clone()
    scores[:7] = float("nan")  # no record yet
    err = torch.tensor([0.5, 0.2, 0.3])
    budget = 90
    totals = []
    for seed in range(600):
        core = adaptive(scores, labels, budget, class_error=err, seed=seed)
        assert torch.equal(core.indices, core.indices.unique())
        assert set(range(7)) <= set(core.indices.tolist())  # unrecorded: always in, weight 1
        assert len(core) == budget
        totals.append(float((core.weights * losses[core.indices]).sum()))
    mean = sum(totals) / len(totals)
    assert mean == pytest.approx(float(losses.sum()), rel=0.02)  # Horvitz-Thompson: unbiased
    sizes = torch.bincount(labels, minlength=3).tolist()
    got = torch.bincount(labels[core.indices], minlength=3).tolist()
    assert got == class_quotas(sizes, budget, err.tolist())
    w_mean = torch.zeros(n)
    for seed in range(300):
        c = adaptive(scores, labels, budget, seed=seed)
        w_mean.index_add_(0, c.indices, c.weights)
    assert float(w_mean.sum() / 300) == pytest.approx(n, rel=0.02)  # weights count examples


def test_adaptive_tilts_towards_high_loss_but_keeps_coverage():
    n = 1000
    labels = torch.zeros(n, dtype=torch.int64)
    losses = torch.ones(n)
    losses[:100] = 20.0  # a hard tenth
    hard = soft = 0
    for seed in range(50):
        core = adaptive(losses, labels, 200, seed=seed)
        hard += int((core.indices < 100).sum())
        soft += int((core.indices >= 100).sum())
    share_hard = hard / (hard + soft)
    assert 0.3 < share_hard < 0.7  # over-sampled (10% of the data), but the uniform half keeps the rest
    only_uniform = adaptive(losses, labels, 200, uniform=1.0, seed=0)
    assert torch.allclose(only_uniform.weights, torch.full((200,), 5.0))


def test_adaptive_rejects_bad_inputs():
    with pytest.raises(ValueError, match="equal-length 1-D"):
        adaptive(torch.zeros(3), torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"uniform must be in \[0, 1\]"):
        adaptive(torch.zeros(3), torch.zeros(3, dtype=torch.int64), 2, uniform=1.5)


def test_the_draw_depends_on_records_and_seed_only():
    # what makes 1 and 2 workers draw the same subset: rank 0 draws from the gathered records
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (500,), generator=g)
    scores = torch.rand(500, generator=g)
    a = adaptive(scores, labels, 100, seed=7)
    b = adaptive(scores.clone(), labels.clone(), 100, seed=7)
    c = adaptive(scores, labels, 100, seed=8)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    assert not torch.equal(a.indices, c.indices)


def test_records_gather_merges_every_ranks_positions():
    from distributed_adcs.engine.records import TrainingRecords

    rec = TrainingRecords(6)
    rec.record(torch.tensor([0, 2]), torch.tensor([1.0, 2.0]))
    other_rank = (torch.tensor([3, 4, 2]), torch.tensor([3.0, 4.0, 9.0]))
    rec.end_epoch(lambda mine: [mine, other_rank])  # what DDPBackend.gather returns on every rank
    assert rec.scores[0] == 1.0 and torch.isnan(rec.scores[1]) and rec.scores[2] == 9.0  # the later rank wins
    assert rec.coverage == pytest.approx(4 / 6)
    rec.end_epoch(lambda mine: [mine])  # an epoch with nothing recorded changes nothing
    assert rec.coverage == pytest.approx(4 / 6)
    clone = TrainingRecords(6)
    clone.load_state_dict(rec.state_dict())
    assert torch.equal(torch.nan_to_num(clone.scores, -1.0), torch.nan_to_num(rec.scores, -1.0))
