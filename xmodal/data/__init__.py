"""Datasets per modality and the step-indexed batch sampler."""

from xmodal.data.sampler import StepBatchSampler
from xmodal.data.speech import (MixingDataset, PairedDataset, SpeechCorpus, ValidationClip, mix_at_snr,
                                resolve_speech_data)

__all__ = ["MixingDataset", "PairedDataset", "SpeechCorpus", "StepBatchSampler", "ValidationClip", "mix_at_snr",
           "resolve_speech_data"]
