"""The epoch loop of one job, shared by the in-process trainer and Ray Train workers.

``Job`` owns the model, optimiser, schedule and current coreset. What differs between a
single process and a DDP worker is behind ``backend`` (which share of the data this process
trains, how rank 0's selection reaches the other ranks); how a coreset is selected is behind ``selector``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..config import JobConfig, dump_yaml, eval_threat
from ..data import Splits, iterate_batches, num_batches
from ..accuracy import autoattack_mask, clean_accuracy, clean_mask, pack_mask, robust_mask
from ..methods import get_method
from ..models import ModelShape, PassCounter, set_precision
from ..progress import progress
from .build import (TIME_SPLIT, TrainState, make_augment, make_objective, make_optimizer, model_shape,
                    optimizer_settings)
from .checkpoint import unwrap
from .ema import BestModel, WeightAverage
from .epoch import normalised_weights, train_epoch
from .boundary import make_boundary
from .guard import make_guard
from .ledger import Ledger
from .phases import epoch_phase, warmup_epochs
from .records import TrainingRecords
from .runtime import generator, rng_state, set_rng_state
from .saved_models import SHAPE_KEY, build_job_model, shape_entry


@dataclass
class Selection:
    """A coreset chosen at ``epoch``: positions into ``splits.train`` and weights."""

    epoch: int
    positions: torch.Tensor
    weights: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)  # seconds: attack, embed, greedy, ...
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per-example columns, e.g. shard


Selector = Callable[[torch.nn.Module, int], Selection | None]  # None: a rank other than 0


class Backend(Protocol):
    rank: int
    world_size: int

    def shard(self, positions: torch.Tensor, weights: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def share_from_rank0(self, obj: Any) -> Any: ...  # rank 0's obj, on every rank
    def gather(self, obj: Any) -> list[Any]: ...  # every rank's obj, in rank order, on every rank
    def end_epoch(self, model: torch.nn.Module) -> None: ...


def at_least_two(positions: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-example epoch is trained as that example twice (same mean loss and gradient):
    BatchNorm cannot take batch statistics of a single example."""
    if positions.numel() == 1:
        return positions.repeat(2), weights.repeat(2)
    return positions, weights


class LocalBackend:
    """One process trains everything."""

    rank, world_size = 0, 1

    def shard(self, positions, weights, epoch):
        return at_least_two(positions, weights)

    def share_from_rank0(self, obj):
        return obj

    def gather(self, obj):
        return [obj]

    def end_epoch(self, model):
        pass


class Job:
    def __init__(self, cfg: JobConfig, splits: Splits, device: torch.device, *,
                 backend: Backend | None = None, selector: Selector | None = None,
                 wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m, shape: ModelShape | None = None):
        """``shape``: the model's (a saved model's, ``engine/saved_models.py``); None: the data's."""
        self.cfg, self.splits, self.device = cfg, splits, device
        self.shape = shape or model_shape(splits)  # stored in every checkpoint: it rebuilds the model alone
        self.backend = backend or LocalBackend()
        self.selector = selector
        self.method = get_method(cfg.coreset.method)
        # what training keeps per example between visits (engine/ledger.py): adaptive's records,
        # FGSM-PGI's cached perturbations; no field, no cost
        self.ledger = Ledger(splits.train.indices, tuple(splits.train.images.shape[1:]))
        self.records = TrainingRecords(self.ledger) if self.method.needs_records else None
        model = set_precision(build_job_model(cfg, self.shape).to(device), cfg.train.precision, device, cfg.train.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark and not cfg.deterministic
        # fp16 only: scale the update's loss so that small gradients survive in half precision
        self.scaler = torch.amp.GradScaler(device.type) if cfg.train.precision == "fp16" else None
        optimizer, schedule = make_optimizer(cfg, model)
        self.state = TrainState(model=wrap_model(model), optimizer=optimizer, schedule=schedule)
        self.objective = make_objective(cfg.objective)
        # extra steps near the boundary (objective.boundary_share): engine/boundary.py
        self.boundary = make_boundary(self.objective, cfg.objective)
        self.guard = make_guard(self)  # catastrophic-overfitting guard (guard.enabled): engine/guard.py
        self.augment = make_augment(cfg)
        # the weight average (train.ema_decay) and the best epoch's model (eval.keep_best): engine/ema.py
        self.ema = None if cfg.train.ema_decay is None else WeightAverage(model, cfg.train.ema_decay)
        self.best = BestModel()
        # per example and attack, from the last final_evaluation: {"examples": {attack: n}, "models":
        # {"last"|"best": {attack: pack_mask(...)}}}
        self.test_outcomes: dict[str, dict] = {"examples": {}, "models": {}}
        self.passes = PassCounter(model)  # every forward and backward of this process's model
        self.ema_passes = None if self.ema is None else PassCounter(self.ema.model)  # its evaluations
        # the passes of the run before this process took it over (a resume: its checkpoint's)
        self._passes_before = {"passes_forward": 0, "passes_backward": 0}
        # wall-clock time (time.time()) this process's job started: the first epoch it runs books
        # the time since as ``startup`` (the runners set it; None: not measured)
        self.started_at: float | None = None

    @property
    def model(self) -> torch.nn.Module:
        return unwrap(self.state.model)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation and the test evaluation run: the weight average when it is on."""
        return self.model if self.ema is None else self.ema.model

    def pass_counts(self) -> dict[str, int]:
        """Examples through the model since the run began, the weight average's evaluations
        included: a resumed run goes on from its checkpoint's counts."""
        return {k: v + self._passes_before[k] for k, v in self._passes_here().items()}

    def set_pass_counts(self, counts: dict[str, int]) -> None:
        """:meth:`pass_counts` goes on from ``counts`` (a checkpoint's, or the guard's own)."""
        here = self._passes_here()
        self._passes_before = {k: int(counts.get(k, 0)) - v for k, v in here.items()}

    def _passes_here(self) -> dict[str, int]:
        out = self.passes.state()
        if self.ema_passes is not None:
            out = {k: v + self.ema_passes.state()[k] for k, v in out.items()}
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def payload(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """What a checkpoint holds (``engine/checkpoint.py``); ``metrics``: those of the epoch
        just trained, which a resume records if the run lacks them (``tracking/epochs.py``)."""
        s = self.state
        coreset = None
        if s.coreset_positions is not None:
            assert s.coreset_weights is not None  # set together with the positions
            coreset = {"positions": s.coreset_positions.cpu(), "weights": s.coreset_weights.cpu(),
                       "indices": self.splits.train.indices[s.coreset_positions.cpu()], "epoch": s.coreset_epoch}
        return {"model": self.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                "schedule": s.schedule.state_dict(), "epoch": s.epoch, "elapsed_s": s.elapsed_s,
                "time_split": dict(s.time_split), "passes": self.pass_counts(), "coreset": coreset,
                "rng": rng_state(), "config": dump_yaml(self.cfg),
                "records": None if self.records is None else self.records.state_dict(scores=False),
                # the per-example ledger (the records' scores among its fields); none without fields
                "ledger": self.ledger.state_dict() if self.ledger.fields else None,
                "scaler": None if self.scaler is None else self.scaler.state_dict(),  # fp16's loss scale
                "ema": None if self.ema is None else self.ema.state_dict(), "best": self.best.state_dict(),
                "guard": None if self.guard is None else self.guard.state_dict(),
                "metrics": dict(metrics or {}), SHAPE_KEY: shape_entry(self.shape)}

    def load_models(self, payload: dict[str, Any]) -> None:
        """What the evaluation of a checkpoint needs: the weights, the weight average (the model
        validation and testing run when averaging is on), the best epoch's model and the epoch."""
        self.model.load_state_dict(payload["model"])
        if self.ema is not None:  # a checkpoint written without averaging starts it at its weights
            self.ema.load_state_dict(payload["ema"]) if payload.get("ema") else self.ema.reset()
        self.best.load_state_dict(payload.get("best"))
        self.state.epoch = int(payload["epoch"])

    def restore(self, payload: dict[str, Any]) -> None:
        s = self.state
        self.load_models(payload)
        s.optimizer.load_state_dict(payload["optimizer"])  # its buffers; its settings and lr are this config's:
        for group in s.optimizer.param_groups:
            group.update(optimizer_settings(self.cfg))
        s.schedule.load_state_dict(payload["schedule"])  # the lr at the checkpoint's progress
        s.elapsed_s = float(payload.get("elapsed_s", 0.0))
        s.time_split.update(payload.get("time_split", {}))
        if "passes" in payload:  # (a checkpoint written before 2026-12-07 has none: the count restarts)
            self.set_pass_counts(payload["passes"])
        core = payload.get("coreset")
        if core is not None:
            s.coreset_positions, s.coreset_weights = core["positions"].long(), core["weights"].float()
            s.coreset_epoch = int(core["epoch"])
        if payload.get("ledger") is not None:
            self.ledger.load_state_dict(payload["ledger"])
        if self.records is not None and payload.get("records") is not None:
            self.records.load_state_dict(payload["records"])
        if self.scaler is not None and payload.get("scaler"):  # (a checkpoint of another precision has none)
            self.scaler.load_state_dict(payload["scaler"])
        if self.guard is not None and payload.get("guard"):  # its fallback outlives a resume
            self.guard.load_state_dict(payload["guard"], self)
        set_rng_state(payload["rng"])

    # -- one epoch -------------------------------------------------------------------------
    def _subset(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, Selection | None]:
        s, n = self.state, len(self.splits.train)
        phase = epoch_phase(epoch, self.cfg.coreset, self.cfg.train.epochs)
        selection = None
        if phase == "select":  # rank 0's selection is what every rank trains on
            selection = self.backend.share_from_rank0(self._select(epoch))
            s.coreset_positions, s.coreset_weights, s.coreset_epoch = (
                selection.positions, selection.weights, selection.epoch)
        if phase == "full":
            return torch.arange(n), torch.ones(n), None
        # a coreset phase comes after a selection (this epoch's, an earlier one's or a checkpoint's)
        assert s.coreset_positions is not None and s.coreset_weights is not None
        return s.coreset_positions, normalised_weights(s.coreset_weights.float(), n), selection

    def _select(self, epoch: int) -> Selection | None:
        """This rank's part of a selection: a records-based method draws on rank 0; otherwise
        every rank calls its selector (a DDP selector shards the work over the ranks and returns
        the selection on rank 0 only)."""
        if self.records is not None:
            if self.backend.rank != 0:
                return None
            positions, weights, timings = self.records.draw(self.method, self.cfg, self.splits.train.labels, epoch)
            return Selection(epoch, positions, weights, timings)
        if self.selector is None:
            raise RuntimeError(f"coreset.method={self.cfg.coreset.method} needs a selector")
        return self.selector(self.state.model, epoch)

    def _book(self, part: str, seconds: float) -> None:
        self.state.time_split[part] += seconds

    def time_split(self) -> dict[str, float]:
        """Cumulative ``time_<part>_s`` for every part of :data:`TIME_SPLIT`."""
        return {f"time_{k}_s": self.state.time_split[k] for k in TIME_SPLIT}

    def run_epoch(self, epoch: int) -> tuple[dict[str, float], Selection | None]:
        """Train epoch ``epoch`` (selecting first when it is a selection epoch)."""
        if self.started_at is not None:
            self._book("startup", max(0.0, time.time() - self.started_at))
            self.started_at = None
        t0 = time.perf_counter()
        positions, weights, selection = self._subset(epoch)
        t_train = time.perf_counter()
        if selection is not None:
            self._book("selection", t_train - t0)
        positions, weights = self.backend.shard(positions, weights, epoch)
        seed, bs = self.cfg.seed, self.cfg.data.batch_size
        # a last batch of one example joins the one before: BatchNorm needs two for batch statistics
        batches = iterate_batches(self.splits.train, bs, shuffle=True,
                                  generator=generator(seed, "order", epoch, self.backend.rank),
                                  positions=positions, weights=weights, augment=self.augment,
                                  min_batch=2, device=self.device)
        # the objective's per-example state (FGSM-PGI: a fresh prior every R epochs): one draw, every rank
        self.objective.prepare_ledger(self.ledger, epoch, generator(seed, "ledger", epoch))
        stats = train_epoch(self.state.model, self.objective, batches, self.state.optimizer, self.state.schedule,
                            epoch, num_batches(len(positions), bs, min_batch=2),
                            generator=generator(seed, "attack", epoch, self.backend.rank, device=self.device),
                            desc=f"epoch {epoch}", record=None if self.records is None else self.records.record,
                            scaler=self.scaler, after_step=None if self.ema is None else self.ema.update,
                            ledger=self.ledger, boundary=self.boundary)
        self.ledger.end_epoch(self.backend.gather)  # every rank's entries on every rank
        self.backend.end_epoch(self.model)
        if self.ema is not None:  # rank 0's averaged BatchNorm statistics on every rank (engine/ema.py)
            self.backend.end_epoch(self.ema.model)
        self.state.epoch = epoch + 1
        self.state.schedule.set(float(epoch + 1))
        epoch_s = time.perf_counter() - t0
        self.state.elapsed_s += epoch_s
        self._book("warmup" if epoch < warmup_epochs(self.cfg.coreset) else "training", time.perf_counter() - t_train)
        metrics = {"train_loss": stats.loss, "train_adv_acc": stats.adv_accuracy,
                   "train_examples": stats.examples, "epoch_time_s": epoch_s,
                   "train_time_s": stats.seconds, "attack_time_s": stats.attack_seconds,
                   "lr": self.state.schedule.lr_at(epoch), "wall_time_s": self.state.elapsed_s,
                   "coreset_active": float(epoch_phase(epoch, self.cfg.coreset, self.cfg.train.epochs) != "full")}
        if self.records is not None:
            metrics["records_coverage"] = self.records.coverage
        metrics.update(self.pass_counts())  # cumulative: attacks, updates, selections, validation
        metrics.update(self.time_split())
        if selection is not None:
            metrics.update({f"selection_{k}_s": v for k, v in selection.timings.items()})
        return metrics, selection

    # -- evaluation ------------------------------------------------------------------------
    def _batches(self, data, limit: int | None = None):
        positions = None if limit is None else torch.arange(min(limit, len(data)))
        return list(iterate_batches(data, self.cfg.data.eval_batch_size, shuffle=False, positions=positions,
                                    device=self.device))

    def validate_if_due(self, epoch: int) -> dict[str, float]:
        """:meth:`validate` after every ``eval.val_every``-th epoch and the last; else nothing.
        Its time is reported as ``val_time_s``."""
        if (epoch + 1) % self.cfg.eval.val_every and epoch + 1 != self.cfg.train.epochs:
            return {}
        t0 = time.perf_counter()
        out = self.validate(epoch)
        if self.cfg.eval.keep_best:  # by validation robust accuracy only, never the test set
            self.best.offer(epoch, out["val_robust_acc"], self.eval_model)
        out["val_time_s"] = time.perf_counter() - t0
        self._book("validation", out["val_time_s"])
        out["time_validation_s"] = self.state.time_split["validation"]
        return out

    def validate(self, epoch: int) -> dict[str, float]:
        norm, eps = eval_threat(self.cfg)
        batches = self._batches(self.splits.val)
        model = self.eval_model
        robust = robust_mask(model, batches, norm=norm, epsilon=eps, steps=self.cfg.eval.val_pgd_steps,
                             generator=generator(self.cfg.seed, "val", epoch, device=self.device))
        if self.records is not None:  # per-class robust error: the class quotas of the next draw
            labels = torch.cat([b.y for b in batches]).cpu()
            wrong = torch.zeros(self.splits.num_classes).index_add_(0, labels, (~robust.cpu()).float())
            self.records.class_error = wrong / torch.bincount(labels, minlength=self.splits.num_classes).clamp_min(1)
        return {"val_clean_acc": clean_accuracy(model, batches), "val_robust_acc": int(robust.sum()) / max(robust.numel(), 1)}

    def final_evaluation(self) -> dict[str, float]:
        """The test evaluation, with the job's whole time split (``time_test_s`` included): of the
        last epoch's model (``test_*``; the weight average when it is on) and, with
        ``eval.keep_best``, of the best epoch's (``best_test_*`` and ``best_epoch``; the same
        numbers, not evaluated twice, when the best epoch is the last). Each example's outcome
        under each attack is kept in :attr:`test_outcomes` (paired comparisons of runs need them)."""
        t0 = time.perf_counter()
        self.test_outcomes = {"examples": {}, "models": {}}
        out = self._test(self.eval_model)
        if self.cfg.eval.keep_best and self.best.state is not None:
            assert self.best.epoch is not None  # offered together with the state
            if self.best.epoch == self.state.epoch - 1:
                best = dict(out)
                self.test_outcomes["models"]["best"] = self.test_outcomes["models"]["last"]
            else:
                model = copy.deepcopy(self.eval_model)
                model.load_state_dict(self.best.state)
                best = self._test(model, "best ")
            out.update({f"best_{k}": v for k, v in best.items()}, best_epoch=float(self.best.epoch))
        self._book("test", time.perf_counter() - t0)
        return {**out, **self.time_split()}

    def _test(self, model: torch.nn.Module, label: str = "") -> dict[str, float]:
        e = self.cfg.eval
        norm, eps = eval_threat(self.cfg)
        batches = self._batches(self.splits.test, e.test_limit)
        wrap = lambda name: (lambda it: progress(it, desc=label + name, total=len(batches)))  # noqa: E731
        robust = robust_mask(model, batches, norm=norm, epsilon=eps, steps=e.pgd_steps, restarts=e.pgd_restarts,
                             generator=generator(self.cfg.seed, "test"), progress=wrap(f"test PGD-{e.pgd_steps}"))
        clean = clean_mask(model, batches, progress=wrap("test clean"))
        pgd = f"pgd{e.pgd_steps}"
        out = {"test_clean_acc": int(clean.sum()) / max(clean.numel(), 1),
               f"test_{pgd}_acc": int(robust.sum()) / max(robust.numel(), 1)}
        masks = {"clean": clean, pgd: robust.cpu()}
        self.test_outcomes["examples"].update({"clean": clean.numel(), pgd: robust.numel()})
        labels = torch.cat([b.y for b in batches]).cpu()
        for c in range(self.splits.num_classes):  # per-class robust accuracy
            mine = labels == c
            if bool(mine.any()):
                out[f"test_pgd{e.pgd_steps}_acc_class{c}"] = float(robust.cpu()[mine].float().mean())
        if e.autoattack:
            n = min(e.autoattack_n, len(self.splits.test))
            x = self.splits.test.float_images(torch.arange(n)).to(self.device)
            y = self.splits.test.labels[:n].to(self.device)
            name = AUTOATTACK_METRICS[e.autoattack_version]
            mask = autoattack_mask(model, x, y, norm="Linf" if norm == "linf" else "L2", epsilon=eps,
                                   n_classes=self.splits.num_classes, seed=self.cfg.seed, version=e.autoattack_version,
                                   square_queries=e.square_queries)
            out[f"test_{name}_acc"] = int(mask.sum()) / mask.numel()
            masks[name] = mask
            self.test_outcomes["examples"][name] = n
        self.test_outcomes["models"]["best" if label else "last"] = {k: pack_mask(m) for k, m in masks.items()}
        return out


# the test metric of each eval.autoattack_version: test_<name>_acc, and its outcomes' name
AUTOATTACK_METRICS = {"standard": "autoattack", "fast": "autoattack_fast", "square": "square"}
