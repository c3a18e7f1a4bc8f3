"""The adapter interface every modality implements."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Adapter(nn.Module):
    """Turns natural-domain samples into a feature map ``(B, C_m, H, W)`` and back.

    ``decode(encode(x)[0], ctx)`` gives back ``x``: all domain knowledge (transforms, scaling, packing of leading
    dimensions) lives here, outside the network. Encoding and decoding run in fp32 even under autocast.

    Attributes:
        channels: ``C_m``, channels of the feature map (input and output of the network).
    """

    channels: int

    def encode(self, x: torch.Tensor, ctx: Any | None = None) -> tuple[torch.Tensor, Any]:
        """Natural domain -> ``(features (B, C_m, H, W), ctx)``.

        With ``ctx`` from an earlier call (the noisy input), ``x`` (the clean target) is encoded with the same
        normalisation, so network estimates and targets live in the same feature space.
        """
        raise NotImplementedError

    def decode(self, features: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Features ``(B, C_m, H, W)`` -> natural domain, shaped like the input given to :meth:`encode`."""
        raise NotImplementedError

    def normalize(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """``x`` (natural domain, shaped like the encoded input) at the scale the network sees; losses use this so
        that loud and quiet examples weigh the same. Identity unless the adapter rescales its input."""
        return x
