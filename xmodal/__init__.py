"""xmodal: audio and cross-modal denoising with modality adapters around one shared U-Net backbone.

``import xmodal`` is cheap: the public names below are imported on first use.

Example:
    >>> import xmodal
    >>> config = xmodal.load_config("recipes/speech.yaml", ["train.max_steps=100"])
    >>> from xmodal.train import train
    >>> result = train(config)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "xmodal.config",
    "ConfigError": "xmodal.config",
    "load_config": "xmodal.config",
    "load_run": "xmodal.checkpoint",
    "AudioAdapter": "xmodal.adapters",
    "build_model": "xmodal.models",
    "load": "xmodal.denoise",
    "Denoiser": "xmodal.denoise",
    "ImageDenoiser": "xmodal.denoise",
    "StackDenoiser": "xmodal.denoise",
    "VideoDenoiser": "xmodal.denoise",
    "SpeechStream": "xmodal.streaming",
    "read_clip": "xmodal.videoio",
    "write_clip": "xmodal.videoio",
    "keep_freed_memory": "xmodal.runtime",
}

# submodules reachable as attributes after a plain ``import xmodal`` (``xmodal.noise.estimate_sigma(...)``)
_SUBMODULES = ("evaluate", "imageio", "io", "metrics", "noise", "tiling", "videoio")

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"xmodal.{name}")  # importing sets the attribute too
    raise AttributeError(f"module 'xmodal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
