"""Image and band-stack adapters: pixels in [0, 1] <-> feature maps for the shared trunk.

Images are their own feature map (the trunk learns the noise residual), with the channel count mapped onto the
model's: a gray model (1 channel) denoises every channel of any image independently (channels are folded into the
batch), a colour model (3 channels) takes 3-channel images and replicates a gray image (averaging its output).

Stacks are band-agnostic: band ``b`` of an ``S``-band stack is denoised from the ``2k + 1`` bands ``b - k .. b + k``
(mirrored at the ends of the spectrum), so one model serves 6, 10 or 200 bands. Every band becomes one item of the
batch the network sees: ``(B, S, H, W) -> (B*S, 2k+1, H, W)``, and the head estimates the middle band.

Videos are denoised frame by frame with temporal context: frame ``t`` of a ``T``-frame clip is denoised from the
``2k + 1`` frames ``t - k .. t + k`` (mirrored at both ends of the clip), their channels side by side:
``(B, T, C, H, W) -> (B*T, (2k+1)*C, H, W)``, and the head estimates the middle frame's ``C`` channels. Channels are
mapped onto the model's as for images (a gray video model denoises each channel of a colour clip as a gray clip).
With ``align_range > 0`` every neighbour is first translated onto its frame by the integer shift that best aligns them
(:mod:`xmodal.align`, estimated on the channel mean, once per pair of frames): motion compensation is domain
knowledge, so it lives here, outside the network (an ONNX export runs the same adapter).

Noise-level maps (non-blind image models): the input carries one extra trailing channel, the per-pixel noise standard
deviation; it is handed to the network beside every denoised channel and dropped from the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xmodal.adapters.base import Adapter

__all__ = ["ImageAdapter", "ImageContext", "StackAdapter", "VideoAdapter", "VideoContext", "spectral_neighbours"]


@dataclass
class ImageContext:
    """What :meth:`ImageAdapter.decode` / :meth:`StackAdapter.decode` need to give back the input's layout.

    Attributes:
        shape: shape of the input given to ``encode`` (without a noise-map channel).
        mode: ``same``, ``fold`` (channels folded into the batch), ``replicate`` (gray input on a colour model) or
            ``stack``.
        batched: the input had a batch dimension (``(B, C, H, W)``); else ``decode`` drops it again.
    """

    shape: tuple[int, int, int, int]
    mode: str
    batched: bool = True

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.batched else x[0]


def _pack(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"Expected `{what}` to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"Expected `{what}` of shape (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"Expected a non-empty `{what}`, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"Expected a floating-point `{what}` (scaled to [0, 1]), got {x.dtype}")
    return (x if x.ndim == 4 else x[None]).float()  # (C, H, W) -> (1, C, H, W)


def _channel_mode(C: int, M: int, items: str, got: str, gray: str) -> str:
    """How ``C`` input channels map onto a model of ``M``: ``same``, ``fold`` (a gray model: channels become items),
    ``replicate`` (a gray input on a colour model); else ``ValueError`` naming ``items`` and what came."""
    if C == M:
        return "same"
    if M == 1:
        return "fold"
    if C == 1:
        return "replicate"
    raise ValueError(f"this model denoises {M}-channel {items}; got {got} {C} channels (use a {gray}, which takes "
                     "any channel count)")


class ImageAdapter(Adapter):
    """Image ``(C, H, W)`` or ``(B, C, H, W)`` float in [0, 1] <-> features ``(B', model_channels [+1], H, W)``.

    Args:
        channels: channels the model works on (1 gray, 3 colour, any positive count).
        noise_map: inputs carry a trailing noise-level-map channel given to the network.

    Example:
        >>> adapter = ImageAdapter(1)
        >>> feats, ctx = adapter.encode(torch.rand(3, 40, 30))  # an RGB image through a gray model
        >>> feats.shape
        torch.Size([3, 1, 40, 30])
        >>> adapter.decode(feats, ctx).shape
        torch.Size([3, 40, 30])
    """

    def __init__(self, channels: int = 1, noise_map: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"image.channels must be at least 1, got {channels}")
        self.model_channels = channels
        self.noise_map = noise_map
        self.channels = channels + int(noise_map)

    def encode(self, x: torch.Tensor, ctx: ImageContext | None = None) -> tuple[torch.Tensor, ImageContext]:
        """Image (plus a trailing noise-map channel for a non-blind model, unless ``ctx`` is given: targets carry
        no map) -> features."""
        batched = x.ndim == 4
        x = _pack(x, "image")
        sigma = None
        if self.noise_map and ctx is None:
            if x.shape[1] < 2:
                raise ValueError("this model takes a noise-level map: expected (C + 1) channels, the last being the "
                                 f"per-pixel noise standard deviation, got {x.shape[1]} channel(s)")
            x, sigma = x[:, :-1], x[:, -1:]  # (B, C, H, W), (B, 1, H, W)
        B, C, H, W = x.shape
        M = self.model_channels
        if ctx is None:
            ctx = ImageContext(shape=(B, C, H, W), mode=_channel_mode(C, M, "images", "an image with", "gray model"),
                               batched=batched)
        elif ctx.shape != (B, C, H, W):
            raise ValueError(f"`ctx` was made for images of shape {ctx.shape}, got {(B, C, H, W)}")
        if ctx.mode == "fold":
            feats = x.reshape(B * C, 1, H, W)  # every channel is an item
            if sigma is not None:
                sigma = sigma.repeat_interleave(C, dim=0)  # (B, 1, H, W) -> (B*C, 1, H, W)
        elif ctx.mode == "replicate":
            feats = x.expand(B, M, H, W)
        else:
            feats = x
        if sigma is not None:
            feats = torch.cat([feats, sigma], dim=1)
        return feats.contiguous(), ctx

    def decode(self, features: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        """Features ``(B', model_channels, H, W)`` -> image of the encoded shape (without the noise map)."""
        B, C, H, W = ctx.shape
        if ctx.mode == "fold":
            x = features.reshape(B, C, H, W)
        elif ctx.mode == "replicate":
            x = features.mean(dim=1, keepdim=True)
        else:
            x = features
        return ctx.unpack(x)


def spectral_neighbours(bands: int, context: int, device: torch.device | None = None) -> torch.Tensor:
    """``(bands, 2 * context + 1)`` band indices ``b - context .. b + context``, mirrored at both ends.

    Example:
        >>> spectral_neighbours(4, 2).tolist()[0]
        [2, 1, 0, 1, 2]
    """
    offsets = torch.arange(-context, context + 1, device=device)
    idx = torch.arange(bands, device=device)[:, None] + offsets  # (S, 2k+1)
    if bands == 1:
        return torch.zeros_like(idx)
    period = 2 * (bands - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= bands, period - idx, idx)


class StackAdapter(Adapter):
    """Band stack ``(S, H, W)`` or ``(B, S, H, W)`` <-> features ``(B*S, 2k+1, H, W)``; any band count ``S``.

    Args:
        context: spectral neighbours ``k`` on each side of the denoised band.

    Example:
        >>> adapter = StackAdapter(2)
        >>> feats, ctx = adapter.encode(torch.rand(10, 32, 32))
        >>> feats.shape
        torch.Size([10, 5, 32, 32])
        >>> adapter.decode(feats[:, 2:3], ctx).shape
        torch.Size([10, 32, 32])
    """

    def __init__(self, context: int = 2) -> None:
        super().__init__()
        if context < 0:
            raise ValueError(f"image.context_bands must be >= 0, got {context}")
        self.context = context
        self.channels = 2 * context + 1

    def encode(self, x: torch.Tensor, ctx: ImageContext | None = None) -> tuple[torch.Tensor, ImageContext]:
        batched = x.ndim == 4
        x = _pack(x, "stack")
        B, S, H, W = x.shape
        if ctx is None:
            ctx = ImageContext(shape=(B, S, H, W), mode="stack", batched=batched)
        elif ctx.shape != (B, S, H, W):
            raise ValueError(f"`ctx` was made for stacks of shape {ctx.shape}, got {(B, S, H, W)}")
        idx = spectral_neighbours(S, self.context, x.device)  # (S, 2k+1)
        feats = x[:, idx.reshape(-1)].reshape(B * S, self.channels, H, W)  # (B, S*(2k+1), H, W) -> (B*S, 2k+1, ...)
        return feats, ctx

    def decode(self, features: torch.Tensor, ctx: ImageContext) -> torch.Tensor:
        """Middle-band estimates ``(B*S, 1, H, W)`` -> ``(B, S, H, W)``."""
        B, S, H, W = ctx.shape
        return ctx.unpack(features.reshape(B, S, H, W))


@dataclass
class VideoContext:
    """What :meth:`VideoAdapter.decode` needs: the input's shape ``(B, T, C, H, W)``, the channel mode (``same``,
    ``fold`` or ``replicate``, as for images) and whether the input had a batch dimension."""

    shape: tuple[int, int, int, int, int]
    mode: str
    batched: bool = True


class VideoAdapter(Adapter):
    """Clip ``(T, C, H, W)`` or ``(B, T, C, H, W)`` float in [0, 1] <-> features ``(B'*T, (2k+1)*M, H, W)``.

    Every frame becomes one item of the batch the network sees, carrying its ``k`` neighbours on each side (mirrored
    at the ends of the clip: a 1-frame clip is its own context). ``M`` is the model's channel count; a gray model
    (``M = 1``) folds the channels of a colour clip into the batch, a colour model replicates a gray clip.

    Args:
        channels: channels per frame the model works on (1 gray, 3 colour).
        context: frames ``k`` on each side of the denoised frame.

    Example:
        >>> adapter = VideoAdapter(1, context=2)
        >>> feats, ctx = adapter.encode(torch.rand(7, 1, 32, 48))  # 7 gray frames
        >>> feats.shape
        torch.Size([7, 5, 32, 48])
        >>> adapter.decode(feats[:, 2:3], ctx).shape
        torch.Size([7, 1, 32, 48])
    """

    def __init__(self, channels: int = 1, context: int = 2, align_range: int = 0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"image.channels must be at least 1, got {channels}")
        if context < 0:
            raise ValueError(f"image.context_frames must be >= 0, got {context}")
        if align_range < 0:
            raise ValueError(f"image.align_range must be >= 0, got {align_range}")
        self.model_channels = channels
        self.context = context
        self.align_range = align_range
        self.channels = (2 * context + 1) * channels

    def pair_shifts(self, guides: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
        """Shifts aligning frame ``j`` onto frame ``i`` for each pair ``(i, j)`` with ``i < j`` (see
        :func:`xmodal.align.estimate_shifts`), from ``guides (B, T, H, W)`` (the channel means): ``(B, len(pairs),
        2)``; zeros when alignment is off. Aligning ``i`` onto ``j`` is the negated shift."""
        from xmodal.align import estimate_shifts

        B = guides.shape[0]
        if self.align_range <= 0 or not pairs:
            return torch.zeros(B, len(pairs), 2, dtype=torch.long, device=guides.device)
        ref = guides[:, [i for i, _ in pairs]].flatten(0, 1)  # (B*P, H, W)
        mov = guides[:, [j for _, j in pairs]].flatten(0, 1)
        return estimate_shifts(ref, mov, self.align_range).view(B, len(pairs), 2)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> every frame's window ``(B, T, 2k+1, C, H, W)``, neighbours aligned to it."""
        B, T, C, H, W = x.shape
        idx = spectral_neighbours(T, self.context, x.device)  # (T, 2k+1)
        windows = x[:, idx]  # (B, T, K, C, H, W)
        if self.align_range <= 0 or T == 1:
            return windows
        slots = idx.tolist()
        pairs = sorted({(min(t, j), max(t, j)) for t in range(T) for j in slots[t] if j != t})
        found = self.pair_shifts(x.mean(dim=2), pairs)  # (B, P, 2)
        where = {p: n for n, p in enumerate(pairs)}
        shifts = torch.zeros(B, T, len(slots[0]), 2, dtype=torch.long, device=x.device)
        for t in range(T):
            for i, j in enumerate(slots[t]):
                if j != t:
                    s = found[:, where[(min(t, j), max(t, j))]]
                    shifts[:, t, i] = s if t < j else -s
        from xmodal.align import shift_frames

        K = idx.shape[1]
        return shift_frames(windows.reshape(B * T * K, C, H, W), shifts.reshape(-1, 2)).reshape(B, T, K, C, H, W)

    def encode(self, x: torch.Tensor, ctx: VideoContext | None = None) -> tuple[torch.Tensor, VideoContext]:
        if not torch.is_tensor(x):
            raise TypeError(f"Expected `video` to be a torch.Tensor, got {type(x).__name__}")
        if x.ndim not in (4, 5):
            raise ValueError(f"Expected `video` of shape (T, C, H, W) or (B, T, C, H, W), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"Expected a non-empty `video`, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"Expected a floating-point `video` (scaled to [0, 1]), got {x.dtype}")
        batched = x.ndim == 5
        x = (x if batched else x[None]).float()
        B, T, C, H, W = x.shape
        M = self.model_channels
        if ctx is None:
            ctx = VideoContext(shape=(B, T, C, H, W), mode=self._mode(C), batched=batched)
        elif ctx.shape != (B, T, C, H, W):
            raise ValueError(f"`ctx` was made for videos of shape {ctx.shape}, got {(B, T, C, H, W)}")
        windows = self._windows(x)  # (B, T, K, C, H, W); aligned on the channel mean, the same for every channel
        K = windows.shape[2]
        if ctx.mode == "fold":  # every channel is a gray clip: items (b, c, t)
            feats = windows.permute(0, 3, 1, 2, 4, 5).reshape(B * C * T, K, H, W)
        elif ctx.mode == "replicate":
            feats = windows.expand(B, T, K, M, H, W).reshape(B * T, K * M, H, W)
        else:
            feats = windows.reshape(B * T, K * C, H, W)
        return feats, ctx

    def _mode(self, C: int) -> str:
        return _channel_mode(C, self.model_channels, "videos", "frames with", "gray video model")

    def encode_middle(self, window: torch.Tensor,
                      shifts: torch.Tensor | None = None) -> tuple[torch.Tensor, VideoContext]:
        """Features of the middle frame of ``window (2k+1, C, H, W)`` only (what :meth:`encode` gives for that frame
        of a longer clip): ``(B', (2k+1)*M, H, W)``; :meth:`decode` with the returned context gives
        ``(1, C, H, W)``. For frame-by-frame inference, whose memory is one window whatever the clip length.

        ``shifts (2k+1, 2)`` align each frame of the window onto the middle one (:meth:`pair_shifts`, computed once
        per pair of frames by the caller); ``None`` estimates them here (zeros when alignment is off)."""
        K = 2 * self.context + 1
        if window.ndim != 4 or window.shape[0] != K:
            raise ValueError(f"Expected a window of shape ({K}, C, H, W), got {tuple(window.shape)}")
        _, C, H, W = window.shape
        mode = self._mode(C)
        M = self.model_channels
        window = window.float()
        if shifts is None and self.align_range > 0:
            k = self.context
            others = [j for j in range(K) if j != k]
            found = self.pair_shifts(window.mean(dim=1)[None], [(min(k, j), max(k, j)) for j in others])[0]
            shifts = torch.zeros(K, 2, dtype=torch.long, device=window.device)
            for n, j in enumerate(others):  # the convention of `encode`: estimated from the earlier frame
                shifts[j] = found[n] if k < j else -found[n]
        if shifts is not None and bool(shifts.any()):
            from xmodal.align import shift_frames

            window = shift_frames(window, shifts)
        if mode == "fold":  # every channel a gray window: (K, C, H, W) -> (C, K, H, W)
            feats = window.transpose(0, 1)
        elif mode == "replicate":
            feats = window.expand(K, M, H, W).reshape(1, K * M, H, W)
        else:
            feats = window.reshape(1, K * C, H, W)
        return feats.contiguous(), VideoContext(shape=(1, 1, C, H, W), mode=mode, batched=False)

    def decode(self, features: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        """Middle-frame estimates ``(B'*T, M, H, W)`` -> clip of the encoded shape."""
        B, T, C, H, W = ctx.shape
        if ctx.mode == "fold":
            x = features.reshape(B, C, T, H, W).transpose(1, 2)
        elif ctx.mode == "replicate":
            x = features.reshape(B, T, self.model_channels, H, W).mean(dim=2, keepdim=True)
        else:
            x = features.reshape(B, T, C, H, W)
        return x if ctx.batched else x[0]
