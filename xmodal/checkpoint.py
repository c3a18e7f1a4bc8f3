"""Run directories and checkpoints: safetensors weights, YAML config, resumable train state. All writes are atomic.

A run directory holds:
    model.safetensors   weights of the unwrapped module, the resolved config embedded in the metadata
    best.safetensors    weights at the best validation score so far (when validation ran)
    config.yaml         the resolved config
    train_state.pt      optimizer, scheduler, scaler, step (tensors and plain data only: loaded with weights_only)

Loading never runs code: weights through safetensors, the train state through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from xmodal._fs import atomic_write, atomic_write_all
from xmodal.config import Config, config_from_dict, config_to_dict

__all__ = ["CheckpointError", "check_checkpoint", "init_from", "load_run", "load_train_state", "load_weights",
           "run_config", "save_checkpoint", "save_train_state", "save_weights", "unwrap"]

WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
CONFIG = "config.yaml"
STATE = "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not match the model; the message names the file."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _weights_writer(model: nn.Module, config: Config | None, step: int | None) -> Callable[[str], None]:
    """``write(path)`` of the unwrapped module's weights as safetensors, ``config`` and the training ``step`` in the
    metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    meta = {"format": "xmodal"}
    if config is not None:
        meta["config"] = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    if step is not None:
        meta["step"] = str(int(step))
    return lambda path: save_file(state, path, metadata=meta)


def save_weights(model: nn.Module, path: str | os.PathLike, config: Config | None = None,
                 step: int | None = None) -> None:
    """Save the unwrapped module's weights as safetensors (atomically), with ``config`` (and the training ``step``)
    in the metadata."""
    atomic_write(path, _weights_writer(model, config, step))


def save_checkpoint(run_dir: str | os.PathLike, model: nn.Module, config: Config, state: dict[str, Any],
                    best: bool = False) -> None:
    """Save a training checkpoint as one: the weights (and, with ``best``, the best weights) and the train
    ``state`` (its ``"step"`` also in the weights' metadata) are all written before any replaces its old file
    (:func:`~xmodal._fs.atomic_write_all`): a full disk keeps the previous checkpoint whole, and a process killed
    between the renames leaves files whose steps differ, which :func:`check_checkpoint` refuses."""
    run_dir = Path(run_dir)
    weights = _weights_writer(model, config, state["step"])
    items = [(run_dir / WEIGHTS, weights)] + ([(run_dir / BEST, weights)] if best else [])
    atomic_write_all([*items, (run_dir / STATE, lambda tmp: torch.save(state, tmp))])


def check_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """``CheckpointError`` when the run's weights were saved at another step than its train ``state`` (a save cut
    between its files): resuming would pair one step's weights with another's optimiser. Weights without a step
    (older runs) are taken as they are."""
    from safetensors import safe_open

    path = Path(run_dir) / WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as f:
            saved = (f.metadata() or {}).get("step")
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if saved is not None and int(saved) != int(state["step"]):
        raise CheckpointError(f"{run_dir}: {WEIGHTS} is from step {saved} but {STATE} from step {state['step']} (a "
                              "save was cut between its files); the run cannot resume exactly: start over with "
                              f"train.resume=false, or from these weights with train.resume=false "
                              f"train.init_from={path}")


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors weights into ``model`` with strict key and shape checks.

    Raises:
        CheckpointError: unreadable file, or missing / unexpected / mis-shaped tensors (listed by name).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    target = unwrap(model).state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in shapes[:5]))
        raise CheckpointError(f"{path}: weights do not match the model ({'; '.join(parts)})")
    unwrap(model).load_state_dict(state, strict=True)


def init_from(model: nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Initialise ``model`` from another run's weights: every tensor whose name and shape match is copied.

    This is how a shared trunk moves between modalities (a gray-image trunk starting a colour or multispectral
    model, a finished run starting a fine-tune). When the source holds one single-channel modality (a gray-image
    model) and the new model's modality is another, its stem and head are grown from the source's (see
    :func:`_transfer_io`), so the new model starts as the source model applied channel by channel or band by band.

    Args:
        model: the freshly built network.
        path: a run directory (its ``model.safetensors``), a ``.safetensors`` file, or a bundled model's name
            (``"gray"``...: :func:`xmodal.pretrained.resolve_model`) where no such path exists.

    Returns:
        ``(loaded names, names of the model left at their initialisation)``.

    Raises:
        CheckpointError: missing or unreadable file, no tensor at all matches, or the trunk does not match as a
            whole (a different architecture).
    """
    from safetensors.torch import load_file

    from xmodal.pretrained import _ALIASES, resolve_model

    if not Path(path).exists() and str(path) in _ALIASES:  # a bundled model's name: `train.init_from=gray`
        path = resolve_model(str(path))
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: train.init_from weights file not found (a run directory, a .safetensors "
                              "file or a bundled model's name)")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    target = unwrap(model).state_dict()
    loaded = sorted(k for k in target if k in state and state[k].shape == target[k].shape)
    if not loaded:
        raise CheckpointError(f"{path}: train.init_from shares no tensor (name and shape) with this model; "
                              "is it the same model.arch and model.widths?")
    # the trunk moves whole or not at all: a partly copied trunk (e.g. widths [8, 16] into [8, 16, 32]) is no
    # initialisation anyone asked for
    trunk = {k for k in target if k.startswith("trunk.")} | {k for k in state if k.startswith("trunk.")}
    bad = sorted(k for k in trunk if k not in loaded)
    if bad:
        def why(k: str) -> str:
            if k not in state:
                return f"missing {k}"
            if k not in target:
                return f"unexpected {k}"
            return f"shape mismatch {k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"

        raise CheckpointError(f"{path}: train.init_from trunk does not match this model ({len(bad)} tensors: "
                              f"{', '.join(why(k) for k in bad[:3])}{' ...' if len(bad) > 3 else ''}); is it the "
                              "same model.arch, model.widths, model.blocks and model.norm?")
    new = {k: state[k] for k in loaded}
    new.update(_transfer_io(unwrap(model), state, target, set(loaded)))
    unwrap(model).load_state_dict(new, strict=False)
    loaded = sorted(new)
    return loaded, sorted(set(target) - set(loaded))


def _transfer_io(model: nn.Module, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                 loaded: set[str]) -> dict[str, torch.Tensor]:
    """Stems and heads for modalities the source lacks, grown from the source's one modality (a gray or colour
    image model) so that the new model starts as the source model applied to its denoised channels:

    - stem ``(W, 1, k, k)`` -> ``(W, C_in, k, k)``: the source filter on the denoised input channels (divided by
      their number, so a replicated gray input gives the source's features), zero on context and noise-map channels;
    - head ``(1, W, k, k)`` and bias ``(1,)`` -> one copy per output channel.

    A multispectral model grown from a gray model thus starts as the gray model applied band by band (its context
    bands weighted 0), a video model as the image model applied frame by frame (a colour image model's stem
    ``(W, C, k, k)`` is copied onto the middle frame's ``C`` channels), and a colour model as the gray model applied to
    the channel mean, removing the same noise estimate from each channel. Returns the new tensors (nothing when the
    source holds several modalities).
    """
    io = getattr(model, "io", {})
    sources = {k.split(".")[1] for k in state if k.startswith("stems.")}
    if len(sources) != 1:
        return {}
    src = sources.pop()
    out: dict[str, torch.Tensor] = {}
    for name, t in target.items():
        parts = name.split(".")
        if name in loaded or parts[0] not in ("stems", "heads") or parts[1] not in io:
            continue
        spec = io[parts[1]]
        if spec.stem != "conv" or spec.head != "residual":  # pixels only: a spectrogram stem starts fresh
            continue
        source = state.get(".".join([parts[0], src, *parts[2:]]))
        if source is None or source.ndim != t.ndim:
            continue
        if source.shape == t.shape:
            out[name] = source.clone()
        elif parts[0] == "stems" and t.ndim == 4 and source.shape[1] == 1 and source.shape[0] == t.shape[0]:
            w = torch.zeros_like(t)
            n = spec.outputs
            w[:, spec.out_offset:spec.out_offset + n] = source / n  # (W, 1, k, k) -> the denoised channels
            out[name] = w
        elif parts[0] == "stems" and t.ndim == 4 and source.shape[0] == t.shape[0] \
                and source.shape[1] == spec.outputs < t.shape[1] and source.shape[2:] == t.shape[2:]:
            w = torch.zeros_like(t)  # (W, C, k, k) -> the denoised frame's C channels (a colour video model)
            w[:, spec.out_offset:spec.out_offset + spec.outputs] = source
            out[name] = w
        elif parts[0] == "heads" and source.shape[0] == 1 and source.shape[1:] == t.shape[1:]:
            out[name] = source.expand_as(t).clone()  # (1, ...) -> (C_out, ...)
    return out


def read_weights_config(path: str | os.PathLike) -> Config:
    """The config embedded in a weights file's metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if "config" not in meta:
        raise CheckpointError(f"{path}: no xmodal config in the metadata")
    return config_from_dict(yaml.safe_load(meta["config"]), f"{path} (embedded config)")


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` a dict of tensors / plain data atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a train state with ``weights_only=True`` (no code can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load the train state ({e})") from None


def run_config(run_dir: str | os.PathLike) -> Config:
    """The config of a run directory (its ``config.yaml``) or of a weights file (embedded); no weights are read.

    Raises:
        CheckpointError: neither a run directory nor a weights file with an embedded config.
    """
    from xmodal.config import load_config

    run_dir = Path(run_dir)
    if run_dir.is_file():
        return read_weights_config(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG})")
    return load_config(run_dir / CONFIG)


def load_run(run_dir: str | os.PathLike, weights: str = WEIGHTS) -> tuple[nn.Module, Config]:
    """Rebuild the network of a run directory (or a single weights file) and load its weights.

    Args:
        run_dir: a run directory holding ``config.yaml`` and weights, or a ``.safetensors`` file with an embedded
            config.
        weights: which weights file of the run directory (``model.safetensors`` or ``best.safetensors``).

    Returns:
        ``(model in eval mode, config)``.

    Raises:
        CheckpointError: missing files or weights that do not match the config.
    """
    from xmodal.modalities import modality_io
    from xmodal.models import build_model

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / weights
    with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten: leave the caller's RNG be
        model = build_model(config.model, {m: modality_io(m, config) for m in config.modalities})
    load_weights(model, path)
    return model.eval(), config
