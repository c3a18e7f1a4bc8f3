"""Small building blocks shared by the trunks, stems and heads.

Causal layers (``model.causal``) treat the last axis as time: a :class:`CausalConv2d` sees only the present and past
frames. Inside :func:`streaming` the same modules run on a few new frames at a time: each causal convolution takes
its past frames from a :class:`StreamState` instead of zero padding, so running a causal network frame by frame
gives the output of one pass over the whole signal (to float rounding). The state lives in the
:class:`StreamState`, not in the modules: one model can serve any number of streams at once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalConv2d", "LayerNorm2d", "ResBlock", "StreamState", "current_stream", "make_conv", "make_norm",
           "streaming"]


class StreamState:
    """The past frames every causal convolution of one stream needs (filled on first use, zeros = silence before
    the start, exactly as the zero padding of a whole-signal pass)."""

    def __init__(self) -> None:
        #: past frames by key: ``id`` of each causal convolution, or ``("onnx", i)`` for an exported network's inputs
        self.pasts: dict = {}

    def __len__(self) -> int:
        return len(self.pasts)

    def reset(self) -> None:
        """Forget everything: the next frames are the start of a new signal."""
        self.pasts.clear()


_STATE: contextvars.ContextVar[StreamState | None] = contextvars.ContextVar("xmodal_stream_state", default=None)


@contextlib.contextmanager
def streaming(state: StreamState) -> Iterator[StreamState]:
    """Run causal networks on consecutive pieces of one signal: inside the block, every :class:`CausalConv2d`
    continues from ``state`` (and updates it) instead of padding the past with zeros.

    Example:
        >>> state = StreamState()
        >>> with streaming(state):  # doctest: +SKIP
        ...     y1 = net(x[..., :10], "speech"); y2 = net(x[..., 10:], "speech")  # == net(x, "speech") split at 10
    """
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


def current_stream() -> StreamState | None:
    """The state of the enclosing :func:`streaming` block, ``None`` outside one (for networks that keep their own
    pasts, such as an ONNX Runtime export)."""
    return _STATE.get()


class CausalConv2d(nn.Conv2d):
    """2-D convolution causal along the last (time) axis: odd kernel along H (zero-padded both sides), kernel ``k``
    with dilation ``d`` along time, padded with ``d (k - 1)`` past frames (zeros, or the stream's past frames inside
    :func:`streaming`). Output frame ``t`` depends on input frames ``t - d (k - 1) .. t`` only. Same weights as an
    ``nn.Conv2d`` of the same kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 dilation: int = 1) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if kh % 2 != 1:
            raise ValueError(f"CausalConv2d needs an odd kernel along H, got {kh}")
        super().__init__(in_channels, out_channels, (kh, kw), dilation=(1, dilation), padding=(kh // 2, 0))
        self.past = dilation * (kw - 1)  # frames of history

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, T) -> (B, C_out, H, T)`` (H is zero-padded by the convolution itself)."""
        state = _STATE.get()
        if state is None or self.past == 0:
            x = F.pad(x, (self.past, 0))
        else:
            prev = state.pasts.get(id(self))
            if prev is None or prev.shape[:3] != x.shape[:3]:
                if prev is not None:
                    raise ValueError(f"a stream's frames changed shape from {tuple(prev.shape[:3])} to "
                                     f"{tuple(x.shape[:3])} (batch, channels, bins); reset the stream first")
                prev = x.new_zeros(x.shape[:3] + (self.past,))
            x = torch.cat([prev, x], dim=-1)  # (B, C, H, past + n)
            state.pasts[id(self)] = x[..., -self.past:].detach()  # a view of this small tensor: no copy
        return self._conv_forward(x, self.weight, self.bias)


def make_conv(in_channels: int, out_channels: int, causal: bool = False, dilation: int = 1) -> nn.Module:
    """A 3x3 convolution keeping H x W: centred (``nn.Conv2d``, padding 1) or causal along time."""
    if causal:
        return CausalConv2d(in_channels, out_channels, 3, dilation)
    if dilation != 1:
        raise ValueError("time dilation is for causal convolutions")
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every position of a ``(B, C, H, W)`` map.

    Statistics are per position (never over H or W), so a crop of the input gives the same crop of the output
    away from the borders: chunked and tiled inference stay exact.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels  # a plain int: the normalised shape stays a constant in traced/exported graphs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis, seen as the last axis of the (B, H, W, C) view (no copy for a
        # channels-last input). Same numbers as the unfused mean/var/rsqrt chain to float rounding, about a fifth
        # faster for the whole image model on CPU; the output is channels-last, which the next convolution prefers.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)  # (B, H, W, C)
        return y.permute(0, 3, 1, 2)  # -> (B, C, H, W)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``layer`` -> :class:`LayerNorm2d`, ``none`` -> identity."""
    if kind == "layer":
        return LayerNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be 'layer' or 'none', got {kind!r}")


class ResBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(gelu(conv(norm(x))))``, width kept.

    ``causal``: both convolutions are :class:`CausalConv2d` with time dilation ``dilation``.
    """

    def __init__(self, channels: int, norm: str = "layer", causal: bool = False, dilation: int = 1) -> None:
        super().__init__()
        self.norm = make_norm(norm, channels)
        self.conv1 = make_conv(channels, channels, causal, dilation)
        self.act = nn.GELU()
        self.conv2 = make_conv(channels, channels, causal, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.norm(x))))
