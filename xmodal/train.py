"""Training: ``python -m xmodal.train RECIPE [key.sub=value ...]`` (or ``torchrun --nproc_per_node N -m xmodal.train``).

One loop: build from config -> for each step: encode (fp32) -> autocast forward -> decode -> fp32 loss -> backward
(scaled for fp16) -> clip -> AdamW -> cosine-with-warmup schedule -> log -> validate -> checkpoint. Rank 0 logs and
saves; validation metrics are summed over ranks. A run directory that already holds a checkpoint is resumed.

Joint runs (``modality: [speech, image]``) take one batch of each modality every step, run them through their own
stems and heads around the one trunk in a single forward call, and step on the weighted sum of their losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from xmodal import checkpoint as ckpt
from xmodal._cli import Interrupted, command_name, exit_status
from xmodal._fs import atomic_write
from xmodal.config import Config, ConfigError, config_to_dict, dump_config, load_config
from xmodal.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from xmodal.inference import autocast_for, enhance
from xmodal.metrics import MetricAccumulator
from xmodal.modalities import (make_adapter, make_corpus, make_loss, metric_names, modality_io, num_workers,
                               primary_metric, score, tensorboard_sample)
from xmodal.selfsup import gamma_at, subsample

__all__ = ["TrainResult", "TrainingStopped", "cosine_with_warmup", "main", "train"]


@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes:
        run_dir: the run directory.
        step: steps completed in total (including resumed ones).
        resumed_from: step the run was resumed at (0 for a fresh run).
        validation: last validation report ``{row: {metric: mean}}`` (rows ``noisy`` and ``enhanced``).
        failures: number of (clip, metric) pairs that could not be scored in the last validation.
        losses: training loss of each step run in this call.
        model: the trained network (unwrapped, in train mode), for use in the same process.
    """

    run_dir: Path
    step: int
    resumed_from: int = 0
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: int = 0
    losses: list[float] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


# On the CPU each step's loss is read (and checked) at once; tests turn this off to run the deferred path CUDA takes.
_READ_LOSS_EVERY_STEP_ON_CPU = True


class _Forward(nn.Module):
    """Every modality's batch through the network in one call, so that DDP sees one forward per backward (the trunk
    is used once per modality; autograd sums its gradients before DDP's hooks fire)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.net(x, m) for m, x in feats.items()}


@dataclass
class _Track:
    """What one modality of a run brings to the loop: its config view, adapter, loss, data and validator."""

    modality: str
    config: Config
    weight: float
    adapter: nn.Module
    loss_fn: nn.Module
    corpus: object
    validator: _Validator | None = None

    @property
    def self_supervised(self) -> bool:
        """Trained with Neighbor2Neighbor (:mod:`xmodal.selfsup`): batches are ``(noisy, neighbour choices)``."""
        return self.modality != "speech" and self.config.image.self_supervised is not None


class TrainingStopped(Interrupted):
    """Training stopped by a signal (``signum``: SIGINT for Ctrl-C, SIGTERM for a scheduler's pre-emption); raised
    after the checkpoint of the last completed step was saved. A :class:`KeyboardInterrupt`, so code that catches
    Ctrl-C catches it."""


class _Stop:
    """Ctrl-C (SIGINT) or SIGTERM (a job scheduler's pre-emption, or torchrun passing either on) during the training
    loop, acted on at a step boundary.

    A step that is cut between the optimizer's update and the step counter would save weights one step ahead of the
    state, so the first signal is only recorded (:attr:`requested`, its number) and the loop stops at the end of the
    step. A second one while waiting raises :class:`TrainingStopped` at once (the loop then saves only if the state is
    consistent), except while a checkpoint is being written (:attr:`hold`) and within ``grace`` seconds of the first:
    under torchrun every worker gets the terminal's Ctrl-C and then the copy torchrun sends on, which must not count
    as a second press. Installed from the main thread only (Python runs signal handlers there); the previous handlers
    are given back on exit. A signal that was ignored stays ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace: float = 0.0) -> None:
        self.requested: int | None = None
        self.hold = False
        self.grace = grace
        self._first = 0.0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is None:
            self.requested, self._first = int(signum), time.monotonic()
        elif not self.hold and time.monotonic() - self._first >= self.grace:
            raise TrainingStopped(signum)

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous not in (None, signal.SIG_IGN):  # None: a handler not installed from Python, left alone
                    signal.signal(signum, self._handle)
                    self._previous[signum] = previous
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def _non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point tensors of ``model`` holding a NaN or an infinity (one device sync)."""
    floats = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(v).all() for v in floats.values()]).tolist()
    return [k for k, ok in zip(floats, finite) if not ok]


def cosine_with_warmup(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear from 1/warmup to 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only (not on biases and norm gains)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _drop_records_after(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` (atomically) without its records of steps after ``step``: those of a run killed
    after its last checkpoint, which the resumed run logs again. A line that is not a record (cut by the kill) goes
    too."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = int(record["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(x + "\n" for x in kept), encoding="utf-8"))


class _Logger:
    """Rank-0 log: console (above the progress bar), ``log.txt``, ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, bar, resumed_from: int = 0) -> None:
        self.enabled = enabled
        self.bar = bar
        self.tb = None
        if enabled:
            if resumed_from:  # a run stopped after its last checkpoint: the steps it redoes are not logged twice
                _drop_records_after(run_dir / "metrics.jsonl", resumed_from)
            self.log_file = open(run_dir / "log.txt", "a", encoding="utf-8")
            self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resumed_from + 1 if resumed_from else None)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)
        except BrokenPipeError:  # the reader of the console went away (`| head`): training and log.txt go on
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the process's stdout from now on)
            if self.bar is not None:
                self.bar.disable = True
        self.log_file.write(text + "\n")
        self.log_file.flush()

    def scalars(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def sample(self, tag: str, x: torch.Tensor, step: int, config: Config) -> None:
        """A validation output in TensorBoard (audio for speech, an image for visual modalities)."""
        if self.enabled and self.tb is not None:
            tensorboard_sample(config.modality, self.tb, tag, x.detach().cpu().float(), step, config)

    def close(self) -> None:
        if self.enabled:
            self.log_file.close()
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def format_report(report: dict[str, dict[str, float]], metrics: tuple[str, ...] | None = None) -> str:
    """A small fixed-width table: one row per report row (noisy, enhanced), one column per metric (default: the
    first row's metrics)."""
    metrics = metrics or tuple(next(iter(report.values()), {}))
    head = f"{'':10s}" + "".join(f"{m:>9s}" for m in metrics)
    rows = [head] + [f"{row:10s}" + "".join(f"{vals.get(m, float('nan')):9.3f}" for m in metrics)
                     for row, vals in report.items()]
    return "\n".join(rows)


class _Validator:
    """Scores the validation clips of this rank; the noisy-input row is computed once (same code) and kept."""

    def __init__(self, clips, config: Config, info: DistInfo) -> None:
        self.clips = clips[info.rank::info.world_size]
        self.config = config
        self.modality = config.modality
        self.metrics = metric_names(self.modality)
        self.info = info
        self.noisy_acc: MetricAccumulator | None = None

    def __call__(self, model: nn.Module, adapter) -> tuple[dict, int, torch.Tensor | None, list[str]]:
        """``(report, failures on all ranks, this rank's first output, this rank's failure reasons)``."""
        if self.noisy_acc is None:
            self.noisy_acc = MetricAccumulator()
            for clip in self.clips:
                score(self.modality, self.noisy_acc, "noisy", clip.name, clip.clean, clip.noisy, self.config)
        acc = MetricAccumulator()
        acc.sums.update(self.noisy_acc.sums)
        acc.counts.update(self.noisy_acc.counts)
        acc.failures.extend(self.noisy_acc.failures)
        model.eval()
        first = None
        for clip in self.clips:
            est = enhance(model, adapter, clip.noisy.to(self.info.device), self.modality,
                          self.config.train.precision).cpu()
            if self.modality in ("image", "video"):  # pixels as every written file holds them, as evaluate scores
                est = est.clamp(0, 1)
            first = est if first is None else first
            score(self.modality, acc, "enhanced", clip.name, clip.clean, est, self.config)
        model.train()
        rows = ("noisy", "enhanced")
        failures = acc.all_reduce([(row, m) for row in rows for m in self.metrics])
        means = acc.means()
        reasons = list(dict.fromkeys(f"{m} of {row} {item!r}: {why}" for row, m, item, why in acc.failures))
        return {row: {m: means.get(row, {}).get(m, float("nan")) for m in self.metrics} for row in rows}, \
            failures, first, reasons


def train(config: Config, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) the run that ``config`` describes.

    Args:
        config: the resolved recipe (one modality, or several for a joint run).
        stop_after: stop after this many steps in this call, saving a checkpoint as an interruption would leave it
            (for time-boxed jobs and resume tests). ``None`` trains to ``train.max_steps``.

    Returns:
        A :class:`TrainResult`. In a joint run the validation rows are prefixed with their modality
        (``speech/enhanced``, ``image/noisy``...).

    Raises:
        FloatingPointError: a non-finite loss, or non-finite weights at a checkpoint (nothing is saved then: the last
            good checkpoint stays on disk).
        TrainingStopped: Ctrl-C (SIGINT) or SIGTERM, a :class:`KeyboardInterrupt`; the checkpoint of the last
            completed step has been saved (under DDP, all ranks stop after the same step).

    The process-wide settings it changes (torch's thread count, the global RNG, cuDNN's benchmark switch) are given
    back as found when it returns or raises.
    """
    from xmodal.data import StepBatchSampler
    from xmodal.models import build_model

    tc, oc = config.train, config.optim
    if tc.max_steps < 0:
        raise ValueError(f"train.max_steps must be >= 0, got {tc.max_steps}")
    info = init_distributed(tc.device)
    # process-wide settings, given back as found
    cudnn_benchmark, num_threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    rng = torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else [])
    rng.__enter__()
    try:
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        elif info.world_size > 1 and info.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        autocast_for(info.device, tc.precision)  # validates the precision for this device early
        if info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training crops have one shape: let cuDNN pick its fastest convs
        run_dir = Path(tc.run_dir)
        joint = config.joint_run
        views = {m: config.for_modality(m) for m in config.modalities}
        fresh_start = not (tc.resume and (run_dir / ckpt.STATE).is_file())
        if tc.init_from and fresh_start:  # a weights file that cannot start this model stops before anything is written
            with torch.random.fork_rng(devices=[]):  # a throwaway network: the run's own is built from the seed below
                ckpt.init_from(build_model(config.model, {m: modality_io(m, v) for m, v in views.items()}),
                               tc.init_from)

        # ---- data (rank 0 writes the demo corpora first, the others then read them)
        demo_root = run_dir / "demo_data"

        def corpora() -> dict:
            return {m: make_corpus(m, v, demo_root / m if joint else demo_root) for m, v in views.items()}

        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            corpus = corpora()
        barrier(info)
        if not info.is_main:
            corpus = corpora()

        # ---- model, optimiser, schedule, scaler
        torch.manual_seed(tc.seed)
        tracks = [_Track(m, v, config.weight(m), make_adapter(m, v).to(info.device), make_loss(m, v), corpus[m])
                  for m, v in views.items()]
        model = build_model(config.model, {m: modality_io(m, v) for m, v in views.items()}).to(info.device)
        optimizer = torch.optim.AdamW(_param_groups(model, oc.weight_decay), lr=oc.lr, betas=oc.betas)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, oc.warmup_steps, tc.max_steps, oc.min_lr_ratio))
        scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16")

        # ---- resume
        step, best, changed = 0, -math.inf, []
        state_path = run_dir / ckpt.STATE
        if tc.resume and state_path.is_file():
            saved = load_config(run_dir / ckpt.CONFIG)
            sections = ("modality", "model") + (("audio",) if "speech" in config.modalities else ())
            for section in sections:
                if config_to_dict(getattr(saved, section)) != config_to_dict(getattr(config, section)):
                    raise ConfigError(f"{run_dir}: holds a run with a different `{section}` config; use another "
                                      "train.run_dir, or train.resume=false to start over")
            io_keys = {"image": ("channels", "noise_map"), "multispectral": ("context_bands",),
                       "video": ("channels", "context_frames")}
            for m in config.modalities:
                if modality_io(m, saved) != modality_io(m, config):
                    keys = [f"image.{k} {getattr(saved.image, k)} -> {getattr(config.image, k)}"
                            for k in io_keys.get(m, ()) if getattr(saved.image, k) != getattr(config.image, k)]
                    raise ConfigError(f"{run_dir}: holds a run whose {m} network input/output differs ("
                                      f"{', '.join(keys) or 'its modality settings changed'}); use another "
                                      "train.run_dir, or train.resume=false to start over")
            ckpt.load_weights(model, run_dir / ckpt.WEIGHTS)
            state = ckpt.load_train_state(state_path)
            ckpt.check_checkpoint(run_dir, state)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step, best = int(state["step"]), float(state["best"])
            # The saved state holds the old run's lr, weight decay and betas; the recipe's win (the README's "optim
            # keys may change on resume": a lower lr to fine-tune, say), Adam's moments are kept.
            changed = [f"optim.{k} {getattr(saved.optim, k)} -> {getattr(oc, k)}"
                       for k in ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "grad_clip")
                       if getattr(saved.optim, k) != getattr(oc, k)]
            factor = cosine_with_warmup(step, oc.warmup_steps, tc.max_steps, oc.min_lr_ratio)
            for group, fresh in zip(optimizer.param_groups, _param_groups(model, oc.weight_decay)):
                group.update(weight_decay=fresh["weight_decay"], betas=oc.betas, initial_lr=oc.lr, lr=oc.lr * factor)
            scheduler.base_lrs = [oc.lr] * len(optimizer.param_groups)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        resumed_from = step
        init_note = ""
        if not resumed_from and tc.init_from:
            loaded, fresh = ckpt.init_from(model, tc.init_from)
            init_note = (f"initialised {len(loaded)} of {len(loaded) + len(fresh)} tensors from {tc.init_from}"
                         + (f" (left fresh: {', '.join(sorted({k.rsplit('.', 2)[0] for k in fresh}))})"
                            if fresh else ""))
        cleared: list[str] = []
        if info.is_main and not resumed_from:  # a new run (or train.resume=false): no record of an old one mixed in
            stale = [run_dir / name for name in (ckpt.WEIGHTS, ckpt.BEST, ckpt.STATE, "validation.json", "log.txt",
                                                 "metrics.jsonl")] + sorted((run_dir / "tb").glob("events.out.*"))
            for path in stale:
                if path.is_file():
                    path.unlink()
                    cleared.append(str(path.relative_to(run_dir)))
        if info.is_main:
            dump_config(config, run_dir / ckpt.CONFIG)

        forward = _Forward(model)
        if info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(forward, device_ids=[info.device.index] if info.device.type == "cuda"
                                              else None)

        end_step = tc.max_steps if stop_after is None else min(tc.max_steps, step + stop_after)
        loaders = []
        for t in tracks:
            sampler = StepBatchSampler(t.config.train.batch_size, end_step, step, info.rank, info.world_size)
            loaders.append(torch.utils.data.DataLoader(t.corpus.train, batch_sampler=sampler,
                                                       num_workers=num_workers(t.modality, t.config),
                                                       pin_memory=info.device.type == "cuda"))
            t.validator = _Validator(t.corpus.valid, t.config, info)
        has_valid = any(t.corpus.valid for t in tracks)

        bar = None
        if info.is_main and tc.progress and end_step > step:
            from tqdm import tqdm

            bar = tqdm(total=tc.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
        log = _Logger(run_dir, info.is_main, tc.tensorboard, bar, resumed_from)
        n_params = sum(p.numel() for p in model.parameters())
        mc = config.model
        shape = f"{'causal ' if mc.causal else ''}unet widths {list(mc.widths)} blocks " \
            f"{mc.blocks if isinstance(mc.blocks, int) else list(mc.blocks)}" \
            if mc.arch == "unet" else f"cnn width {mc.widths[0]} depth {mc.cnn_depth}"
        what = " + ".join(config.modalities) + (
            " (joint: " + ", ".join(f"{t.modality} batch {t.config.train.batch_size} weight {t.weight:g}"
                                    for t in tracks) + ")" if joint else "")
        log.line(f"xmodal train: {what}, {shape}, {n_params / 1e6:.3f} M parameters, {info.world_size} "
                 f"process(es) on {info.device}, precision {tc.precision}")
        for t in tracks:
            log.line(f"data{f' ({t.modality})' if joint else ''}: {t.corpus.description}")
            if t.self_supervised:
                log.line(f"loss{f' ({t.modality})' if joint else ''}: self-supervised (Neighbor2Neighbor): squared "
                         f"error to the neighbour sub-image + regulariser ramped 0 -> "
                         f"{t.config.image.self_supervised_gamma:g} (image_loss is not used)")
            if t.corpus.demo:
                keys = "data.clean_dir/data.noise_dir or data.pairs_dir" if t.modality == "speech" else \
                    "image.train_dir" + (" or image.pairs_dir" if t.modality == "image" else "")
                log.line(f"NOTE: no {t.modality + ' ' if joint else ''}data configured ({keys}): this is a DEMO run "
                         "on a synthetic corpus; its numbers say nothing about real data.")
        if cleared:
            log.line(f"started over in {run_dir}: removed the previous run's {', '.join(cleared)}")
        if init_note:
            log.line(init_note)
        if resumed_from:
            log.line(f"resumed from {run_dir} at step {resumed_from}"
                     + (f" with {', '.join(changed)}" if changed else ""))

        fp32_hint = " or use train.precision=fp32" if tc.precision != "fp32" else ""

        def save(path_best: bool = False) -> None:
            nonlocal saved_step
            # every rank checks (their weights are the same), so that all stop together
            bad = _non_finite_tensors(model)
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise FloatingPointError(f"non-finite weights after step {step} ({bad[0]}{more}); lower optim.lr "
                                         f"(now {oc.lr:g}){fp32_hint}. Nothing was saved: the "
                                         f"checkpoint in {run_dir} (if any) is the last good one")
            if not info.is_main:
                saved_step = step
                return
            stop.hold = True  # a second Ctrl-C must not cut the weights/state pair in half
            try:  # all files written before any is replaced: a full disk keeps the last checkpoint whole
                ckpt.save_checkpoint(run_dir, model, config, {"step": step, "best": best,
                                                              "optimizer": optimizer.state_dict(),
                                                              "scheduler": scheduler.state_dict(),
                                                              "scaler": scaler.state_dict()}, best=path_best)
            finally:
                stop.hold = False
            saved_step = step

        def validate() -> tuple[dict, int, bool]:
            """Every modality's validation; the best checkpoint follows the first modality's primary metric."""
            nonlocal best
            merged, total_failures, value = {}, 0, float("nan")
            for i, t in enumerate(tracks):
                if not t.corpus.valid:
                    continue
                report, failures, first, reasons = t.validator(model, t.adapter)
                if i == 0:
                    value = report["enhanced"].get(primary_metric(t.modality), float("nan"))
                prefix = f"{t.modality}/" if joint else ""
                merged.update({prefix + row: vals for row, vals in report.items()})
                total_failures += failures
                log.line(f"validation{f' of {t.modality}' if joint else ''} at step {step} ({len(t.corpus.valid)} "
                         f"clips, {failures} metric failures):\n" + format_report(report, t.validator.metrics)
                         + "".join(f"\n  failed: {why}" for why in reasons[:5])
                         + (f"\n  ... and {len(reasons) - 5} more" if len(reasons) > 5 else ""))
                log.scalars(step, "valid", {f"{prefix}{row}/{m}": v for row, vals in report.items()
                                            for m, v in vals.items()})
                if first is not None:
                    log.sample(f"valid/{prefix}enhanced_0", first, step, t.config)
            improved = math.isfinite(value) and value > best
            if improved:
                best = value
            return merged, total_failures, improved

        result = TrainResult(run_dir, step, resumed_from)
        model.train()
        t_last, n_last = time.perf_counter(), 0
        step_items = sum(t.config.train.batch_size for t in tracks)
        # Losses of the steps since the last look, kept on the device: reading one back (`.item()`) makes the host
        # wait for the GPU, so on CUDA they are read in one go at log, validation and save steps (a non-finite loss
        # still stops the run, naming its step, before any checkpoint is written). On the CPU reading is free.
        pending: list[torch.Tensor] = []
        sync_every_step = info.device.type != "cuda" and _READ_LOSS_EVERY_STEP_ON_CPU
        # Ctrl-C and SIGTERM are acted on between steps; `updating` is true while the weights are ahead of `step` (a
        # KeyboardInterrupt raised then must not save).
        stop, updating, saved_step = _Stop(grace=1.0 if info.world_size > 1 else 0.0), False, None

        def stop_here(synced: bool) -> bool:
            """Whether to stop after this step. Under DDP every rank must stop at the same step (a rank that went on
            would wait for the others' gradients for ever), so the request is all-reduced, at the steps where the
            host reads the device anyway (every step on the CPU; log, validation and save steps on CUDA), and a rank
            that got no signal stops with the others."""
            if info.world_size == 1:
                return stop.requested is not None
            if not synced:
                return False
            flag = torch.tensor([stop.requested or 0], device=info.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
            if signum and stop.requested is None:
                stop.requested = signum
            return bool(signum)

        def check_losses() -> None:
            if not pending:
                return
            values = torch.stack(pending).tolist()
            first_step = step - len(values) + 1
            pending.clear()
            for k, value in enumerate(values):
                if not math.isfinite(value):
                    raise FloatingPointError(f"non-finite loss {value} at step {first_step + k}; lower optim.lr "
                                             f"(now {oc.lr:g}){fp32_hint}")
            result.losses.extend(values)
            if bar is not None:
                bar.set_postfix(loss=f"{values[-1]:.4f}")
        stop.__enter__()
        agreed = False  # all ranks stop after the same step (and meet once more after the checkpoint is written)
        try:
            for batches in zip(*loaders):
                if info.world_size == 1 and stop.requested is not None:
                    raise TrainingStopped(stop.requested)
                feats, ctxs, cleans, pairs = {}, {}, {}, {}
                for t, (noisy, clean) in zip(tracks, batches):
                    noisy = noisy.to(info.device, non_blocking=True)  # speech (b, 1, T); images (b, C, P, P)
                    clean = clean.to(info.device, non_blocking=True)
                    if t.self_supervised:  # `clean` holds the neighbour choices (b, 2, P/2, P/2): the input is one
                        pairs[t.modality] = noisy, clean  # sub-image, the target the other
                        noisy, clean = subsample(noisy, clean[:, 0]), subsample(noisy, clean[:, 1])
                    cleans[t.modality] = clean
                    # speech (b, 2, F, N); images (b', C_m, P, P); fp32
                    feats[t.modality], ctxs[t.modality] = t.adapter.encode(noisy)
                with autocast_for(info.device, tc.precision):
                    ests = forward(feats)
                loss, terms = 0.0, {}
                for t in tracks:
                    m, ctx, clean = t.modality, ctxs[t.modality], cleans[t.modality]
                    est = ests[m].float()
                    est_wave = t.adapter.decode(est, ctx)  # natural domain, shaped like `clean`
                    if t.self_supervised:
                        crops, choices = pairs[m]
                        with torch.no_grad(), autocast_for(info.device, tc.precision):  # f(y) on the whole crops
                            whole_feats, whole_ctx = t.adapter.encode(crops)
                            whole = t.adapter.decode(model(whole_feats, m).float(), whole_ctx)
                        loss_m, terms_m = t.loss_fn(est_wave, clean, subsample(whole, choices[:, 0]),
                                                    subsample(whole, choices[:, 1]),
                                                    gamma_at(step, tc.max_steps, t.config.image.self_supervised_gamma))
                    else:
                        target, _ = t.adapter.encode(clean, ctx)
                        loss_m, terms_m = t.loss_fn(t.adapter.normalize(est_wave, ctx),
                                                    t.adapter.normalize(clean, ctx), est, target)
                    loss = loss + t.weight * loss_m if joint else loss_m
                    terms.update({f"{m}/loss": loss_m, **{f"{m}/{k}": v for k, v in terms_m.items()}}
                                 if joint else terms_m)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), oc.grad_clip if oc.grad_clip > 0
                                                           else float("inf"))
                lr_used = optimizer.param_groups[0]["lr"]  # this step's (the scheduler then sets the next one's)
                updating = True
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                updating = False
                n_last += step_items
                pending.append(loss.detach())
                if bar is not None:
                    bar.update(1)
                logging = step % tc.log_every == 0 or step == end_step
                evaluating = bool(has_valid and ((tc.eval_every and step % tc.eval_every == 0)
                                                 or step == tc.max_steps))
                saving = (tc.save_every and step % tc.save_every == 0) or step == end_step
                synced = sync_every_step or logging or evaluating or saving
                if synced:
                    check_losses()
                if logging:
                    dt = time.perf_counter() - t_last
                    rate = n_last / dt if dt > 0 else float("nan")
                    shown = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])
                    if info.world_size > 1:  # the whole batch's loss, not rank 0's share of it
                        torch.distributed.all_reduce(shown)
                        shown = shown / info.world_size
                    shown_loss, *shown_terms = shown.tolist()
                    values = {"loss": shown_loss, **dict(zip(terms, shown_terms)), "lr": lr_used,
                              "grad_norm": float(grad_norm), "samples_per_s": rate}  # train.batch_size: global
                    log.scalars(step, "train", values)
                    log.line(f"step {step}/{tc.max_steps} loss {shown_loss:.4f} "
                             + " ".join(f"{k} {v:.4f}" for k, v in zip(terms, shown_terms))
                             + f" lr {values['lr']:.2e} grad {float(grad_norm):.2f} {values['samples_per_s']:.1f} "
                               "samples/s")
                    t_last, n_last = time.perf_counter(), 0
                if evaluating:
                    result.validation, result.failures, improved = validate()
                    save(path_best=improved)
                elif saving:
                    save()
                if stop_here(synced):
                    agreed = True
                    raise TrainingStopped(stop.requested)
            if info.world_size == 1 and stop.requested is not None:  # under DDP the last step's check had the say
                raise TrainingStopped(stop.requested)
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            if updating:  # a second Ctrl-C inside the update: weights and step disagree, keep what is on disk
                log.line(f"{what} during step {step + 1}, in the middle of the weight update: not saved; the "
                         f"checkpoint on disk is kept, run the same command to resume from it")
                raise
            check_losses()
            if saved_step != step:
                save()
            log.line(f"{what} at step {step}; checkpoint saved, run the same command to resume")
            if agreed:
                barrier(info)  # the other ranks leave once rank 0 has written the checkpoint
            raise
        finally:
            stop.__exit__(None, None, None)
            if bar is not None:
                bar.close()
        if step == resumed_from and has_valid and step == tc.max_steps and not result.validation:
            result.validation, result.failures, _ = validate()  # already finished: report only
        if info.is_main and result.validation:
            (run_dir / "validation.json").write_text(json.dumps(
                {"step": step, "report": result.validation, "failures": result.failures}, indent=2))
        log.close()
        result.step = step
        result.model = model
        # Leave together: a gloo rank that tears its process group down while another still saves or validates
        # can abort in the C++ destructor ("terminate called without an active exception").
        barrier(info)
        return result
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
        rng.__exit__(None, None, None)
        cleanup_distributed(info)


def main(argv: list[str] | None = None) -> int:
    """Parse ``RECIPE [key.sub=value ...]`` and train. Returns the exit status."""
    parser = argparse.ArgumentParser(prog=command_name("train"), description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="YAML recipe file (recipes/speech.yaml), or a bundled recipe's name: "
                        "speech, image, multispectral, joint, video, tiny...")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100 optim.lr=3e-4")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop after N steps in this call, checkpointed (run the command again to resume)")
    args = parser.parse_args(argv)
    if args.stop_after is not None and args.stop_after < 1:
        print(f"error: --stop-after must be at least 1, got {args.stop_after}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.recipe, args.overrides)
        result = train(config, stop_after=args.stop_after)
    except (ConfigError, ckpt.CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a diverging run: the message names the step and what to change
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. train.run_dir on a read-only file system or under a regular file
        where = e.filename if e.filename is not None else ""
        print(f"error: {where}: {e.strerror}" if where and e.strerror else f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: train() has saved the checkpoint and said so; no traceback
        return exit_status(e)
    if int(os.environ.get("RANK", "0")) == 0:  # once, not once per torchrun process
        print(f"done: {result.step} steps, run directory {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
