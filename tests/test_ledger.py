"""The per-example ledger (engine/ledger.py): keyed by global example index; the same on 1 and 2
DDP ranks (a real gloo group, no Ray); checkpointed so that a resumed job equals an uninterrupted
one; image-shaped entries follow random crops and flips (CIFAR-shaped tensors)."""

from __future__ import annotations


import pytest
import torch
from helpers import TINY, two_gloo_ranks

from distributed_adcs.data.augment import crop_flip, draw_crop_flip
from distributed_adcs.data.batches import iterate_batches
from distributed_adcs.data.types import ImageSet
from distributed_adcs.engine.job import LocalBackend
from distributed_adcs.engine.ledger import BatchLedger, Ledger
from distributed_adcs.engine.records import TrainingRecords
from distributed_adcs.engine.runtime import generator

KEYS = torch.tensor([11, 3, 7, 20, 5, 14, 9])  # global indices of 7 training examples (odd: DDP pads)
SHAPE = (3, 4, 4)


def test_rows_are_found_by_global_index():
    ledger = Ledger(KEYS, SHAPE)
    ledger.declare("margin", fill=-1.0)
    ledger.write("margin", torch.tensor([20, 3]), torch.tensor([0.5, 0.25]))
    assert ledger.read("margin", torch.tensor([3, 11, 20])).tolist() == [0.25, -1.0, 0.5]
    assert ledger.fields["margin"].tolist() == [-1.0, 0.25, -1.0, 0.5, -1.0, -1.0, -1.0]  # row = position
    for unknown in (4, 21, -1):  # not a training example (4: a gap between keys)
        with pytest.raises(KeyError):
            ledger.read("margin", torch.tensor([unknown]))
    assert ledger.nbytes_per_example() == {"margin": 4}


def _epochs(backend, epochs: int = 3) -> dict:
    """A ledger updated as training would: each visited example's entries become a function of
    their previous value and its index, in batches of the positions this rank trains."""
    from distributed_adcs.config import ObjectiveConfig
    from distributed_adcs.objectives import build_objective
    from distributed_adcs.specs.objectives import FGSMPGIParams

    ledger = Ledger(KEYS, SHAPE)
    records = TrainingRecords(ledger)  # adaptive's losses: a field of the same ledger
    ledger.declare("image", SHAPE)
    pgi = build_objective(ObjectiveConfig(name="fgsm_pgi", epsilon=0.1, params=FGSMPGIParams(reset_every=2)))
    n = len(KEYS)
    for epoch in range(epochs):
        pgi.prepare_ledger(ledger, epoch, generator(0, "ledger", epoch))  # the same draw on every rank
        positions, _ = backend.shard(torch.arange(n), torch.ones(n), epoch)
        for chunk in positions.split(2):
            index = ledger.keys[chunk]
            old = ledger.read("image", index)
            ledger.write("image", index, 2 * old + index.float().view(-1, 1, 1, 1))
            records.record(chunk, index.float() * (epoch + 1))
            prior = ledger.read("fgsm_pgi_prior", index)
            ledger.write("fgsm_pgi_prior", index, -prior)
        ledger.end_epoch(backend.gather)
    return ledger.state_dict()


def _rank(rank: int):
    from distributed_adcs.distributed.trainer import DDPBackend

    return _epochs(DDPBackend(rank, 2, seed=0))


def test_two_ddp_ranks_hold_what_one_process_holds():
    out = two_gloo_ranks(_rank)
    one = _epochs(LocalBackend())
    assert set(one["fields"]) == {"adaptive_loss", "image", "fgsm_pgi_prior", "fgsm_pgi_momentum"}
    assert not torch.isnan(one["fields"]["adaptive_loss"]).any()  # every example recorded
    assert one["fields"]["image"].abs().sum() > 0
    for rank in (0, 1):
        for name, values in one["fields"].items():
            assert torch.equal(out[rank]["fields"][name], values), (rank, name)


def test_crop_flip_keeps_its_draws():
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out, frame = draw_crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(1)))  # the same draws, same order
    assert torch.equal(frame.apply(x), out)


def test_a_stored_perturbation_follows_its_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    delta = (torch.rand(8, 3, 32, 32, generator=g) - 0.5) * 0.1  # stored: the un-augmented frame
    x_aug, frame = draw_crop_flip(x, torch.Generator().manual_seed(2))
    assert frame.flips.any() and not frame.flips.all() and (frame.offsets != 4).any()  # crops and flips differ
    seen = frame.apply(delta)
    # the perturbation the batch sees is the stored one moved as the image was: pixel for pixel
    torch.testing.assert_close(x_aug + seen, frame.apply(x + delta), rtol=0, atol=1e-6)
    assert torch.equal(frame.back(seen, delta), delta)  # there and back: nothing changes
    step = torch.full_like(seen, 0.5)
    stored = frame.back(seen + step, delta)
    kept = frame.apply(torch.ones_like(x)) > 0  # batch-frame pixels that are image, not padding
    assert torch.equal(frame.apply(stored)[kept], (seen + step)[kept])  # the update lands on its pixels
    covered = frame.back(torch.ones_like(seen), torch.zeros_like(delta)) > 0
    assert torch.equal(stored[covered], (delta + 0.5)[covered])
    assert torch.equal(stored[~covered], delta[~covered]) and (~covered).any()  # cropped away: kept


def test_one_known_crop_by_hand():
    from distributed_adcs.data.augment import CropFlip

    d = torch.arange(2 * 32 * 32, dtype=torch.float32).view(1, 2, 32, 32)
    frame = CropFlip(torch.tensor([[0], [8]]), torch.tensor([True]), 4)  # rows shifted down 4, cols left 4, mirrored
    seen = frame.apply(d)
    # batch pixel (r, c) shows stored pixel (r - 4, 35 - c) where that exists, else 0 (padding): the
    # crop keeps stored rows 0..27 and columns 4..31
    assert seen[0, 1, 10, 20] == d[0, 1, 6, 15] and seen[0, 0, 2, 5] == 0 and seen[0, 0, 5, 2] == 0
    back = frame.back(seen + 1000, d)
    assert back[0, 1, 6, 15] == d[0, 1, 6, 15] + 1000 and back[0, 0, 30, 3] == d[0, 0, 30, 3]  # row 30: cut off
    assert back[0, 0, 27, 4] == d[0, 0, 27, 4] + 1000 and back[0, 0, 5, 3] == d[0, 0, 5, 3]  # column 3: cut off


def test_batches_carry_their_frame_and_the_ledger_reads_in_it():
    g = torch.Generator().manual_seed(0)
    n = 10
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g), torch.arange(100, 100 + n))
    ledger = Ledger(data.indices, (3, 32, 32))
    ledger.declare("delta", (3, 32, 32))
    ledger.reset("delta", torch.rand(n, 3, 32, 32, generator=g))
    ledger.declare("margin")
    before = ledger.fields["delta"].clone()
    for batch in iterate_batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(3), augment=crop_flip):
        raw = data.float_images(batch.position)
        assert torch.equal(batch.x, batch.frame.apply(raw))
        view = BatchLedger(ledger, batch, epoch=0)
        seen = view.read("delta")
        assert torch.equal(seen, batch.frame.apply(before[batch.position]))
        view.write("delta", seen * 2)
        view.write("margin", batch.index.float())  # not image-shaped: no frame
    covered = torch.zeros_like(before, dtype=torch.bool)
    for batch in iterate_batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(3), augment=crop_flip):
        covered[batch.position] = batch.frame.back(torch.ones(len(batch), 3, 32, 32), torch.zeros(len(batch), 3, 32, 32)) > 0
    assert torch.equal(ledger.fields["delta"][covered], 2 * before[covered])
    assert torch.equal(ledger.fields["delta"][~covered], before[~covered])
    assert ledger.fields["margin"].tolist() == list(range(100, 100 + n))


def _fgsm_pgi_job(extra=()):
    from distributed_adcs.config import load_config
    from distributed_adcs.engine.build import load_job_splits
    from distributed_adcs.engine.job import Job

    cfg = load_config("configs/quickstart.yaml", [*TINY, "objective.name=fgsm_pgi", "train.epochs=3",
                                                  "objective.params.reset_every=2", "data.augment=crop_flip",
                                                  "coreset.method=adaptive", "coreset.warmup_epochs=1",
                                                  "coreset.fraction=0.5", *extra])
    splits = load_job_splits(cfg)
    torch.manual_seed(0)
    return Job(cfg, splits, torch.device("cpu"))


def test_a_resumed_job_equals_an_uninterrupted_one(tmp_path):
    from distributed_adcs.engine.checkpoint import load_checkpoint, save_checkpoint

    whole = _fgsm_pgi_job()
    for epoch in range(3):
        whole.run_epoch(epoch)
        whole.validate_if_due(epoch)  # adaptive's class quotas come from validation
    first = _fgsm_pgi_job()
    first.run_epoch(0)
    first.validate_if_due(0)
    saved = save_checkpoint(tmp_path / "last.pt", first.payload())
    assert set(first.ledger.fields) == {"adaptive_loss", "fgsm_pgi_prior", "fgsm_pgi_momentum"}
    resumed = _fgsm_pgi_job()
    resumed.restore(load_checkpoint(saved))
    for epoch in (1, 2):
        resumed.run_epoch(epoch)
        resumed.validate_if_due(epoch)
    for name, values in whole.ledger.fields.items():
        assert torch.equal(torch.nan_to_num(resumed.ledger.fields[name], -1.0), torch.nan_to_num(values, -1.0)), name
    assert torch.equal(resumed.state.coreset_positions, whole.state.coreset_positions)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    # the ledger is live: momenta were written (a reset at epoch 2 left priors of +-eps, then a step)
    assert whole.ledger.fields["fgsm_pgi_momentum"].abs().sum() > 0
