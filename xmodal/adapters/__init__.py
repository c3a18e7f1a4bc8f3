"""Modality adapters: natural-domain samples <-> feature maps for the shared trunk."""

from xmodal.adapters.audio import AudioAdapter, AudioContext
from xmodal.adapters.base import Adapter
from xmodal.adapters.image import (ImageAdapter, ImageContext, StackAdapter, VideoAdapter, VideoContext,
                                  spectral_neighbours)

__all__ = ["Adapter", "AudioAdapter", "AudioContext", "ImageAdapter", "ImageContext", "StackAdapter", "VideoAdapter",
           "VideoContext", "spectral_neighbours"]
