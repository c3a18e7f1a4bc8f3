"""Modality adapters: natural-domain samples <-> feature maps for the shared trunk."""

from xmodal.adapters.audio import AudioAdapter, AudioContext
from xmodal.adapters.base import Adapter

__all__ = ["Adapter", "AudioAdapter", "AudioContext"]
