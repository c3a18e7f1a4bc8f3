"""Modality registry: what each modality plugs into the shared data path and training loop.

Adding a modality = one adapter + its io + its noise/data + its losses/metrics + one entry in each function here.
The training loop, checkpoints and CLIs only call these functions; they never branch on the modality themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from xmodal.adapters import Adapter, AudioAdapter
from xmodal.config import Config
from xmodal.models import ModalityIO

__all__ = ["MODALITIES", "make_adapter", "make_corpus", "make_loss", "metric_names", "primary_metric", "score",
           "tensorboard_sample"]

MODALITIES: dict[str, ModalityIO] = {
    "speech": ModalityIO(channels=AudioAdapter.channels, stem="spectral", head="complex_mask", pad_mode="constant"),
}


def _unknown(modality: str) -> ValueError:
    return ValueError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")


def make_adapter(modality: str, config: Config) -> Adapter:
    """The adapter of ``modality`` built from its section of ``config``."""
    if modality == "speech":
        return AudioAdapter(config.audio)
    raise _unknown(modality)


def make_corpus(modality: str, config: Config, demo_root: str | Path) -> Any:
    """Training dataset + validation clips (``.train``, ``.valid``, ``.description``, ``.demo``)."""
    if modality == "speech":
        from xmodal.data import resolve_speech_data

        return resolve_speech_data(config.data, config.audio.sample_rate, demo_root)
    raise _unknown(modality)


def make_loss(modality: str, config: Config) -> nn.Module:
    """``loss(est, ref, est_feats, ref_feats) -> (total, {term: value})``, natural-domain tensors normalised."""
    if modality == "speech":
        from xmodal.losses import SpeechLoss

        return SpeechLoss(config.loss)
    raise _unknown(modality)


def metric_names(modality: str) -> tuple[str, ...]:
    """Validation metrics of ``modality``, in report order."""
    if modality == "speech":
        from xmodal.metrics import SPEECH_METRICS

        return SPEECH_METRICS
    raise _unknown(modality)


def primary_metric(modality: str) -> str:
    """The metric that picks the best checkpoint (higher is better)."""
    if modality == "speech":
        return "pesq"
    raise _unknown(modality)


def score(modality: str, acc: Any, row: str, item: str, ref: Any, est: Any, config: Config) -> dict[str, float]:
    """Score one validation item into ``acc`` (failures recorded, not raised). ``ref``/``est``: one item, natural
    domain, batch dimension removed (speech: ``(1, T)``)."""
    if modality == "speech":
        from xmodal.metrics import speech_metrics

        return speech_metrics(acc, row, item, ref[0], est[0], config.audio.sample_rate)
    raise _unknown(modality)


def tensorboard_sample(modality: str, writer: Any, tag: str, x: Any, step: int, config: Config) -> None:
    """Log one validation output (natural domain, speech ``(C, T)``) to a TensorBoard ``SummaryWriter``."""
    if modality == "speech":
        wave = x.clamp(-1, 1).reshape(-1, x.shape[-1])[0]  # (..., T) -> (T,): first channel of the first item
        writer.add_audio(tag, wave, step, config.audio.sample_rate)
        return
    raise _unknown(modality)
