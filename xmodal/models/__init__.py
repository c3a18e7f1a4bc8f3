"""Networks: one shared trunk with per-modality stems and heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xmodal.config import ModelConfig
from xmodal.models.heads import make_head, make_stem
from xmodal.models.simple import SimpleCNN
from xmodal.models.unet import UNet

__all__ = ["DenoisingNet", "ModalityIO", "SimpleCNN", "UNet", "build_model", "build_trunk"]


@dataclass(frozen=True)
class ModalityIO:
    """What the network needs to know about one modality's feature map (nothing about its domain).

    Attributes:
        channels: feature channels in.
        stem: stem kind (``conv`` or ``spectral``).
        head: head kind (``complex_mask`` or ``residual``).
        pad_mode: how to pad to the trunk's size multiple (``constant`` = zeros, ``replicate``, ``reflect``).
        out_channels: feature channels out (``None`` = ``channels``).
        out_offset: first input channel the output estimates (context bands, a noise-level map).
    """

    channels: int
    stem: str
    head: str
    pad_mode: str = "constant"
    out_channels: int | None = None
    out_offset: int = 0

    @property
    def outputs(self) -> int:
        return self.channels if self.out_channels is None else self.out_channels


def build_trunk(config: ModelConfig) -> nn.Module:
    """The trunk named by ``config.arch``."""
    if config.arch == "unet":
        return UNet(config.widths, config.blocks, config.norm, config.causal)
    if config.arch == "cnn":
        if config.causal:
            raise ValueError("model.causal needs model.arch 'unet' (the 'cnn' baseline has no causal form)")
        return SimpleCNN(config.widths[0], config.cnn_depth)
    raise ValueError(f"model.arch must be 'unet' or 'cnn', got {config.arch!r}")


class DenoisingNet(nn.Module):
    """Stem[m] -> shared trunk -> Head[m], on feature maps of any H x W (padded to the trunk's multiple, cropped back).

    Args:
        trunk: a module ``(B, width, H, W) -> (B, width, H, W)`` with attributes ``width`` and ``size_multiple``
            (optional: ``time_multiple`` for W, else ``size_multiple``; ``causal``: stems and heads causal along W).
        modalities: the stems/heads to hold, by modality name (one checkpoint can hold several).
        mask_bound: bound of complex-mask heads.
    """

    def __init__(self, trunk: nn.Module, modalities: dict[str, ModalityIO], mask_bound: float = 1.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.io = dict(modalities)
        causal = bool(getattr(trunk, "causal", False))
        self.stems = nn.ModuleDict({m: make_stem(s.stem, s.channels, trunk.width, causal)
                                    for m, s in modalities.items()})
        self.heads = nn.ModuleDict(
            {m: make_head(s.head, trunk.width, s.channels, mask_bound, s.out_channels, s.out_offset, causal)
             for m, s in modalities.items()})

    @property
    def modalities(self) -> list[str]:
        return list(self.io)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Estimate clean features.

        Args:
            x: ``(B, C_m, H, W)`` noisy feature map.
            modality: which stem and head to use.

        Returns:
            ``(B, C_out, H, W)`` estimate of the clean feature map (``C_out = C_m`` unless the modality's input
            carries context channels).
        """
        if modality not in self.io:
            raise KeyError(f"this network has no stem/head for modality {modality!r} (it has {self.modalities})")
        spec = self.io[modality]
        if x.ndim != 4 or x.shape[1] != spec.channels:
            raise ValueError(f"Expected features of shape (B, {spec.channels}, H, W) for {modality}, "
                             f"got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        m = self.trunk.size_multiple
        ph, pw = (-H) % m, (-W) % getattr(self.trunk, "time_multiple", m)
        xp = F.pad(x, (0, pw, 0, ph), mode=spec.pad_mode) if ph or pw else x  # (B, C, H, W) -> (B, C, H+ph, W+pw)
        h = self.trunk(self.stems[modality](xp))
        y = self.heads[modality](h, xp)
        return y[..., :H, :W]  # crop back to (B, C_out, H, W)


def build_model(config: ModelConfig, modalities: dict[str, ModalityIO]) -> DenoisingNet:
    """Build the network of ``config`` with a stem and head for each modality."""
    return DenoisingNet(build_trunk(config), modalities, config.mask_bound)
