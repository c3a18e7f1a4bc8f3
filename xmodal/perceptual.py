"""LPIPS, the learned perceptual image distance (Zhang et al., CVPR 2018), from weights the user supplies.

Nothing is downloaded. LPIPS needs two sets of weights:

- the ImageNet weights of a torchvision backbone (``alex``, the paper's default; ``vgg``; or ``squeeze``): a file
  such as ``alexnet-owt-7be5be79.pth``, which torchvision keeps in ``<torch.hub.get_dir()>/checkpoints/`` once it has
  downloaded it on a machine with internet access, or a whole LPIPS state dict saved from the ``lpips`` package;
- the linear calibration layers (v0.1), which ship inside the ``lpips`` package on PyPI (``pip install lpips``):
  they are read from the installed package when no file is given.

The computation is the ``lpips`` package's ``LPIPS(net=..., version="0.1")`` (``tests/test_perceptual.py`` checks
equality with it): inputs scaled from [0, 1] to [-1, 1] and standardised per channel, backbone features at
``len(channels)`` depths, each unit-normalised along channels, squared differences weighted per channel by the
linear layers, averaged over space and summed over depths. Lower is closer; identical images score 0.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["LPIPS", "LPIPS_NETS", "lpips_score", "read_state_dict"]


@dataclass(frozen=True)
class _Net:
    builder: str  # torchvision.models function
    taps: tuple[int, ...]  # indices in ``features`` whose outputs are compared (the lpips package's slice ends)
    channels: tuple[int, ...]
    hub_file: str  # torchvision's file name for the ImageNet weights
    min_size: int  # smallest height and width the features accept


LPIPS_NETS = {
    "alex": _Net("alexnet", (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), "alexnet-owt-7be5be79.pth", 31),
    "vgg": _Net("vgg16", (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), "vgg16-397923af.pth", 16),
    "squeeze": _Net("squeezenet1_1", (1, 4, 7, 9, 10, 11, 12), (64, 128, 256, 384, 384, 512, 512),
                    "squeezenet1_1-b8a52dc0.pth", 17),
}

_SHIFT = (-0.030, -0.088, -0.188)  # the lpips package's ScalingLayer, for inputs in [-1, 1]
_SCALE = (0.458, 0.448, 0.450)


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (read with ``weights_only``: it cannot run code).

    Args:
        path: the file.
        what: how errors name it (an option or argument, e.g. ``image_loss.perceptual_weights``).

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling / safetensors header errors have no common base class
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{what}: {path} is not a readable state dict ({type(e).__name__}: {first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps its weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, not a state dict (a dict of tensors)")
    return state


def _default_backbone(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_NETS[net].hub_file


def _default_linear(net: str) -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between images in [0, 1] (see the module docstring for the weights).

    Args:
        backbone: the backbone's ImageNet state dict: torchvision's file (keys ``features.N...``; the classifier is
            ignored) or a whole ``lpips.LPIPS`` state dict (keys ``net.sliceK...`` and ``linK...``, which then also
            gives the linear layers). Default: torchvision's file in ``<torch.hub.get_dir()>/checkpoints/``.
        linear: the linear layers (``linK.model.1.weight``, ``(1, C, 1, 1)`` each), e.g. ``lpips/weights/v0.1/
            alex.pth``. Default: from the backbone file when it holds them, else from the installed ``lpips``
            package.
        net: ``alex``, ``vgg`` or ``squeeze``.

    ``forward(est, ref)`` takes ``(C, H, W)`` or ``(B, C, H, W)`` with ``C`` 1 (gray, replicated to RGB as is usual)
    or 3, each side at least ``LPIPS_NETS[net].min_size`` pixels, and returns ``(B,)`` distances (float32,
    differentiable). The weights are frozen.

    Raises:
        ValueError: unknown ``net``; a file that is not the state dict it should be (the message names it, says
            what was expected and what it holds). FileNotFoundError: a weights file that does not exist, or no
            default to use.
    """

    def __init__(self, backbone: str | os.PathLike | None = None, linear: str | os.PathLike | None = None,
                 net: str = "alex") -> None:
        super().__init__()
        from torchvision import models

        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS net must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
        spec = LPIPS_NETS[net]
        self.net = net
        if backbone is None:
            backbone = _default_backbone(net)
            if not backbone.is_file():
                raise FileNotFoundError(
                    f"LPIPS ({net}) needs torchvision's ImageNet {spec.builder} weights ({spec.hub_file}); not found "
                    f"at {backbone}. Copy the file there (torchvision saves it there when it downloads it) or pass "
                    f"its path (backbone=..., --lpips FILE); xmodal downloads nothing")
        state = read_state_dict(backbone, "LPIPS backbone")
        features_state, lin_state = _split_lpips_state(state)
        if linear is None and not lin_state:
            linear = _default_linear(net)
            if linear is None:
                raise FileNotFoundError(
                    "LPIPS needs its linear calibration weights (v0.1): they ship in the `lpips` package (pip "
                    f"install lpips) or pass the file (linear=..., --lpips-linear), e.g. lpips/weights/v0.1/{net}.pth")
        if linear is not None:
            lin_state = {k: v for k, v in read_state_dict(linear, "LPIPS linear layers").items()
                         if k.startswith("lin")}
        self.backbone_file, self.linear_file = str(backbone), str(linear if linear is not None else backbone)

        last = max(spec.taps)
        features = getattr(models, spec.builder)(weights=None).features[: last + 1]
        index = {k: k.split(".")[0] for k in features_state}
        wanted = {k: v for k, v in features_state.items() if index[k].isdigit() and int(index[k]) <= last}
        try:
            features.load_state_dict(wanted)
        except RuntimeError as e:
            short = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise ValueError(f"LPIPS backbone: {backbone} is not a torchvision {spec.builder} state dict "
                             f"({short})") from None
        for m in features.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False  # the tapped outputs must survive the next layer, and gradients need them
        self.features = features.eval().requires_grad_(False)
        self.taps = spec.taps

        weights = []
        for k, channels in enumerate(spec.channels):
            w = lin_state.get(f"lin{k}.model.1.weight")
            if w is None or tuple(w.shape) != (1, channels, 1, 1):
                got = "missing" if w is None else f"shape {tuple(w.shape)}"
                raise ValueError(f"LPIPS linear layers: {self.linear_file} is not the LPIPS v0.1 {net} file: "
                                 f"lin{k}.model.1.weight should be (1, {channels}, 1, 1), {got}")
            weights.append(w.detach().float().reshape(1, channels, 1, 1))
        self.lin = nn.ParameterList([nn.Parameter(w, requires_grad=False) for w in weights])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    @property
    def description(self) -> str:
        """One line for reports: what was computed and from which files."""
        return (f"LPIPS v0.1 (Zhang et al. 2018), {self.net} backbone from {self.backbone_file}, linear layers from "
                f"{self.linear_file}; gray replicated to RGB; lower is closer")

    def _rgb(self, x: torch.Tensor, name: str) -> torch.Tensor:
        shape = tuple(x.shape)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"lpips: `{name}` must be (C, H, W) or (B, C, H, W) with 1 (gray) or 3 (RGB) channels, "
                             f"got shape {shape}")
        size = LPIPS_NETS[self.net].min_size
        if min(x.shape[-2:]) < size:
            raise ValueError(f"lpips ({self.net}): images must be at least {size} x {size}, got "
                             f"{tuple(x.shape[-2:])}")
        x = x.to(self.shift.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (2 * x - 1 - self.shift) / self.scale

    def forward(self, est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``(B,)`` LPIPS distances between ``est`` and ``ref`` (same shape, values in [0, 1])."""
        if est.shape != ref.shape:
            raise ValueError(f"lpips: `est` and `ref` must have the same shape, got {tuple(est.shape)} and "
                             f"{tuple(ref.shape)}")
        a, b = self._rgb(est, "est"), self._rgb(ref, "ref")
        total = a.new_zeros(a.shape[0])
        k = 0
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in self.taps:
                na = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                nb = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                total = total + ((na - nb).pow(2) * self.lin[k]).sum(dim=1).mean(dim=(-2, -1))
                k += 1
        return total


def _split_lpips_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(features state with ``features.`` keys as torchvision numbers them, linear-layer state) from a torchvision
    backbone state dict or a whole ``lpips.LPIPS`` state dict (``net.sliceK.N...`` keep torchvision's ``N``)."""
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    features = {}
    for k, v in state.items():
        if k.startswith("net.slice"):
            features[k.split(".", 2)[2]] = v  # net.slice2.3.weight -> 3.weight
        elif not k.startswith(("classifier.", "lin", "scaling_layer.")):
            features[k.removeprefix("features.")] = v
    return features, lin


def lpips_score(ref: torch.Tensor, deg: torch.Tensor, model: LPIPS, data_range: float = 1.0,
                batch: int = 8) -> float:
    """Mean LPIPS between ``ref`` and ``deg``: one image ``(H, W)`` or ``(C, H, W)``, or frames ``(N, C, H, W)``
    (the mean over frames), numpy or torch, values in ``[0, data_range]``, computed by ``model`` ``batch`` frames at
    a time.

    Raises:
        ValueError: shapes differ, a channel count other than 1 or 3, or an image too small for the backbone.
    """
    def frames(x: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
        return t[None, None] if t.ndim == 2 else t[None] if t.ndim == 3 else t

    a, b = frames(ref), frames(deg)
    if a.shape != b.shape:
        raise ValueError(f"lpips: `ref` and `deg` must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    with torch.no_grad():
        total = sum(float(model(b[i:i + batch].float() / data_range, a[i:i + batch].float() / data_range).sum())
                    for i in range(0, len(a), batch))
    return total / len(a)
