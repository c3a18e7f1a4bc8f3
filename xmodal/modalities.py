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

__all__ = ["MODALITIES", "make_adapter", "make_corpus", "make_loss", "metric_names", "modality_io", "num_workers",
           "primary_metric", "score", "tensorboard_sample"]

MODALITIES: tuple[str, ...] = ("speech", "image", "multispectral", "video")
_PIXELS = ("image", "multispectral", "video")  # modalities of the `image` and `image_loss` sections


def _unknown(modality: str) -> ValueError:
    return ValueError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")


def modality_io(modality: str, config: Config) -> ModalityIO:
    """The feature-map contract of ``modality`` for the network (channels in/out, stem, head, padding)."""
    if modality == "speech":
        return ModalityIO(channels=AudioAdapter.channels, stem="spectral", head="complex_mask", pad_mode="constant")
    if modality == "image":
        c = config.image.channels
        return ModalityIO(channels=c + int(config.image.noise_map), stem="conv", head="residual",
                          pad_mode="replicate", out_channels=c, out_offset=0)
    if modality == "multispectral":
        k = config.image.context_bands
        return ModalityIO(channels=2 * k + 1, stem="conv", head="residual", pad_mode="replicate", out_channels=1,
                          out_offset=k)
    if modality == "video":
        k, c = config.image.context_frames, config.image.channels
        return ModalityIO(channels=(2 * k + 1) * c, stem="conv", head="residual", pad_mode="replicate",
                          out_channels=c, out_offset=k * c)
    raise _unknown(modality)


def make_adapter(modality: str, config: Config) -> Adapter:
    """The adapter of ``modality`` built from its section of ``config``."""
    if modality == "speech":
        return AudioAdapter(config.audio)
    if modality == "image":
        from xmodal.adapters import ImageAdapter

        return ImageAdapter(config.image.channels, config.image.noise_map)
    if modality == "multispectral":
        from xmodal.adapters import StackAdapter

        return StackAdapter(config.image.context_bands)
    if modality == "video":
        from xmodal.adapters import VideoAdapter

        return VideoAdapter(config.image.channels, config.image.context_frames, config.image.align_range)
    raise _unknown(modality)


def make_corpus(modality: str, config: Config, demo_root: str | Path) -> Any:
    """Training dataset + validation clips (``.train``, ``.valid``, ``.description``, ``.demo``)."""
    if modality == "speech":
        from xmodal.data import resolve_speech_data

        return resolve_speech_data(config.data, config.audio.sample_rate, demo_root)
    if modality in ("image", "multispectral"):
        from xmodal.data.images import resolve_image_data, resolve_stack_data

        resolve = resolve_image_data if modality == "image" else resolve_stack_data
        return resolve(config.image, demo_root, config.train.batch_size, config.train.max_steps)
    if modality == "video":
        from xmodal.data.video import resolve_video_data

        return resolve_video_data(config.image, demo_root, config.train.batch_size, config.train.max_steps)
    raise _unknown(modality)


def num_workers(modality: str, config: Config) -> int:
    """DataLoader workers of ``modality``'s data section."""
    if modality == "speech":
        return config.data.num_workers
    if modality in _PIXELS:
        return config.image.num_workers
    raise _unknown(modality)


def make_loss(modality: str, config: Config) -> nn.Module:
    """``loss(est, ref, est_feats, ref_feats) -> (total, {term: value})``, natural-domain tensors normalised."""
    if modality == "speech":
        from xmodal.losses import SpeechLoss

        return SpeechLoss(config.loss)
    if modality in _PIXELS:
        if config.image.self_supervised is not None:
            from xmodal.selfsup import Neighbor2NeighborLoss

            return Neighbor2NeighborLoss()
        from xmodal.losses import ImageLoss

        return ImageLoss(config.image_loss)
    raise _unknown(modality)


def metric_names(modality: str) -> tuple[str, ...]:
    """Validation metrics of ``modality``, in report order."""
    if modality == "speech":
        from xmodal.metrics import SPEECH_METRICS

        return SPEECH_METRICS
    if modality == "video":
        from xmodal.metrics import VIDEO_METRICS

        return VIDEO_METRICS
    if modality == "image":
        from xmodal.metrics import IMAGE_METRICS

        return IMAGE_METRICS
    if modality == "multispectral":
        from xmodal.metrics import STACK_METRICS

        # ERGAS divides by band means, which the training scaling (offset removed) changes: evaluate scores it on
        # file values
        return tuple(m for m in STACK_METRICS if m != "ergas")
    raise _unknown(modality)


def primary_metric(modality: str) -> str:
    """The metric that picks the best checkpoint (higher is better)."""
    if modality == "speech":
        return "pesq"
    if modality in _PIXELS:
        return "psnr"
    raise _unknown(modality)


def score(modality: str, acc: Any, row: str, item: str, ref: Any, est: Any, config: Config) -> dict[str, float]:
    """Score one validation item into ``acc`` (failures recorded, not raised). ``ref``/``est``: one item, natural
    domain, batch dimension removed (speech: ``(1, T)``; images ``(C, H, W)``; stacks ``(S, H, W)``; videos
    ``(T, C, H, W)``, see :func:`xmodal.metrics.video_metrics`)."""
    if modality == "speech":
        from xmodal.metrics import speech_metrics

        return speech_metrics(acc, row, item, ref[0], est[0], config.audio.sample_rate)
    if modality in ("image", "multispectral"):
        from xmodal.metrics import image_metrics

        est = est[: ref.shape[0]]  # a noisy input of a non-blind model carries its noise map: scored without it
        return image_metrics(acc, row, item, ref, est, metric_names(modality))
    if modality == "video":
        from xmodal.metrics import video_metrics

        return video_metrics(acc, row, item, ref, est, metric_names(modality))
    raise _unknown(modality)


def tensorboard_sample(modality: str, writer: Any, tag: str, x: Any, step: int, config: Config) -> None:
    """Log one validation output (natural domain, speech ``(C, T)``, images ``(C, H, W)``, videos
    ``(T, C, H, W)``: the middle frame) to TensorBoard."""
    if modality == "speech":
        wave = x.clamp(-1, 1).reshape(-1, x.shape[-1])[0]  # (..., T) -> (T,): first channel of the first item
        writer.add_audio(tag, wave, step, config.audio.sample_rate)
        return
    if modality == "video":
        x = x[x.shape[0] // 2]
    if modality in _PIXELS:
        image = x.clamp(0, 1)
        if image.shape[0] not in (1, 3):
            image = image[image.shape[0] // 2:image.shape[0] // 2 + 1]  # a stack: its middle band
        writer.add_image(tag, image, step, dataformats="CHW")
        return
    raise _unknown(modality)
