"""Modality registry: what each modality plugs into the shared data path.

Adding a modality = one adapter + its io + its noise/data + its losses/metrics + one entry here.
"""

from __future__ import annotations

from xmodal.adapters import Adapter, AudioAdapter
from xmodal.config import Config
from xmodal.models import ModalityIO

__all__ = ["MODALITIES", "make_adapter"]

MODALITIES: dict[str, ModalityIO] = {
    "speech": ModalityIO(channels=AudioAdapter.channels, stem="spectral", head="complex_mask", pad_mode="constant"),
}


def make_adapter(modality: str, config: Config) -> Adapter:
    """The adapter of ``modality`` built from its section of ``config``."""
    if modality == "speech":
        return AudioAdapter(config.audio)
    raise ValueError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")
