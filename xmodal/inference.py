"""Running a network on natural-domain input: encode -> network -> decode."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from xmodal.adapters import Adapter

__all__ = ["autocast_for", "enhance"]


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (``fp32`` = disabled, ``bf16``, ``fp16``).

    Raises:
        ValueError: ``fp16`` on CPU (CPU half precision is slow and unscaled; use ``bf16``) or an unknown precision.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision 'fp16' needs a CUDA device (use 'bf16' on CPU)")
        return torch.autocast(device.type, dtype=torch.float16)
    raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")


@torch.no_grad()
def enhance(model: nn.Module, adapter: Adapter, x: torch.Tensor, modality: str,
            precision: str = "fp32") -> torch.Tensor:
    """Denoise ``x`` in its natural domain (e.g. ``wave (B, C, T)``) in one pass; returns the same shape."""
    feats, ctx = adapter.encode(x)
    with autocast_for(x.device, precision):
        est = model(feats, modality)
    return adapter.decode(est.float(), ctx)
