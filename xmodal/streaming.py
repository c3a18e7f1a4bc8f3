"""Real-time speech denoising: feed audio as it arrives, get denoised audio back with a fixed latency.

A :class:`SpeechStream` (from :meth:`xmodal.Denoiser.stream`) runs a causal speech model (``model.causal: true``) one
STFT frame at a time. Each push computes the frames its samples complete, runs the network on them only (every causal
convolution continues from the stream's :class:`~xmodal.models.layers.StreamState`), and overlap-adds the inverse
frames. The output is the same signal as ``Denoiser.denoise`` on the whole input (to float rounding; tested), delayed:

* **Latency.** Frame ``n`` covers input samples ``[n hop - n_fft/2, n hop + n_fft/2)`` (the centred STFT of the
  offline path) and output sample ``s`` is final once every frame covering it is done. A push therefore returns every
  sample up to ``n_fft - hop`` samples before the end of what came in, rounded down to a frame: 24 ms at 16 kHz with
  ``n_fft`` 512 and hop 128, and a sample waits at most ``n_fft - 1`` samples (32 ms) plus the compute time.
* **Start and end.** The first ``n_fft/2`` samples are reflected as in ``torch.stft(center=True)``, so nothing comes
  out before ``n_fft/2 + 1`` samples have come in; :meth:`SpeechStream.flush` reflects the end the same way and
  returns the rest, so the outputs of all pushes plus the flush are exactly as long as the input.
* **Levels.** A stream cannot know the level of audio that has not arrived yet, so streaming needs a model that does
  not normalise by the whole signal's RMS (``audio.normalize_rms: false``; the bundled ``speech_rt`` is trained on
  speech from -45 to -13 dBFS instead).
* **Rate.** The stream takes audio at the model's rate (16 kHz for the bundled models): resampling is the caller's
  (an audio interface can usually be opened at that rate).

Example:
    >>> den = xmodal.load("speech_rt")  # doctest: +SKIP
    >>> stream = den.stream(channels=1)  # doctest: +SKIP
    >>> for block in microphone_blocks():  # e.g. 10 ms = 160 samples at a time  # doctest: +SKIP
    ...     speaker.write(stream.push(block))  # doctest: +SKIP
    >>> speaker.write(stream.flush())  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from xmodal.adapters.audio import compress, decompress
from xmodal.denoise import _check_options, _check_precision, _float_numpy, _limit_gain
from xmodal.inference import autocast_for
from xmodal.models.layers import StreamState, streaming

__all__ = ["SpeechStream"]

_MAX_FRAMES = 512  # frames per network call when a push brings many (bounded memory for big pushes)


class SpeechStream:
    """One real-time denoising stream (build it with :meth:`xmodal.Denoiser.stream`).

    Args:
        denoiser: a :class:`xmodal.Denoiser` whose model is causal and does not normalise levels.
        channels: channels of the audio pushed (processed as a batch; each keeps its own network state).
        mix, atten_limit_db: as in :meth:`xmodal.Denoiser.denoise` (dry/wet and attenuation limit).
        precision: ``fp32`` or ``bf16`` (autocast) for the network.

    Raises:
        ValueError: the model is not causal or normalises by the whole signal's RMS, or an argument is out of range.
    """

    def __init__(self, denoiser: Any, channels: int = 1, *, mix: float = 1.0, atten_limit_db: float | None = None,
                 precision: str = "fp32") -> None:
        label = f"the model{' ' + repr(denoiser.name) if denoiser.name else ''}"
        if not getattr(getattr(denoiser.model, "trunk", None), "causal", False):
            raise ValueError(f"{label} is not causal (model.causal: false): its output depends on future frames, so "
                             "it cannot stream; use Denoiser.denoise, or a causal model such as the bundled "
                             "'speech_rt'")
        if denoiser.config.audio.normalize_rms:
            raise ValueError(f"{label} normalises each input by its whole-signal RMS (audio.normalize_rms: true), "
                             "which a stream cannot know in advance; stream with a model trained with "
                             "audio.normalize_rms: false")
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        _check_options(mix, atten_limit_db, 1.0, None)
        self.denoiser = denoiser
        self.channels = int(channels)
        self.mix = float(mix)
        self.precision = _check_precision(precision, denoiser.device)
        self._gain = _limit_gain(atten_limit_db)
        audio = denoiser.adapter
        self.sample_rate = int(audio.sample_rate)
        self.n_fft, self.hop = int(audio.n_fft), int(audio.hop_length)
        self._half = self.n_fft // 2
        window = torch.zeros(self.n_fft)  # torch.stft centres a shorter window in n_fft
        left = (self.n_fft - audio.win_length) // 2
        window[left:left + audio.win_length] = audio.window.detach().cpu()
        self._window = window.to(denoiser.device)
        self._power = float(denoiser.config.audio.compress)
        self.reset()

    def __repr__(self) -> str:
        return (f"SpeechStream({self.denoiser.name or 'model'}, channels={self.channels}, "
                f"sample_rate={self.sample_rate}, delay={self.delay})")

    @property
    def delay(self) -> int:
        """Samples between the end of the input pushed so far and the end of the output returned, when pushes are
        whole frames (``n_fft - hop``; up to ``hop - 1`` more while a frame fills)."""
        return self.n_fft - self.hop

    def reset(self) -> None:
        """Start a new signal (forget the past; the stream can be used again after :meth:`flush`)."""
        self._state = StreamState()
        self._received = 0  # input samples pushed
        self._emitted = 0  # output samples returned
        self._dry = np.zeros((self.channels, 0), np.float32)  # input from sample `_emitted` on (for mix / limit)
        self._tail = np.zeros((self.channels, 0), np.float32)  # the last n_fft/2 + 1 input samples (end reflection)
        self._like: Any = np.zeros(0 if self.channels == 1 else (self.channels, 0), np.float32)  # caller's layout
        self._padded: np.ndarray | None = None  # reflect-padded signal from `_frame * hop` on (None until started)
        self._frame = 0  # next frame to compute
        C = self.channels
        self._ola = torch.zeros(C, 0, device=self.denoiser.device)  # overlap-add from padded index `_emitted + half`
        self._env = torch.zeros(0, device=self.denoiser.device)
        self._closed = False

    # -- input ------------------------------------------------------------------------------------------------

    def _check(self, block: Any) -> np.ndarray:
        x = _float_numpy(block, "block")
        if x.ndim == 1 and self.channels == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.channels:
            expected = "(n,) or (1, n)" if self.channels == 1 else f"({self.channels}, n)"
            raise ValueError(f"Expected a block of shape {expected} for a {self.channels}-channel stream, "
                             f"got {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError("the block contains NaN or infinite samples")
        return x

    def push(self, block: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Add ``block`` (``(n,)`` for one channel, or ``(C, n)``, float in [-1, 1], any ``n`` including 0) and
        return the output samples it completes (``(m,)`` or ``(C, m)``, same type as ``block``; ``m`` may be 0).

        Raises:
            TypeError: not a float numpy array or tensor.
            ValueError: wrong channel count or NaN/inf samples.
            RuntimeError: the stream was flushed (call :meth:`reset` to start a new signal).
        """
        if self._closed:
            raise RuntimeError("this stream was flushed; call reset() to start a new signal")
        x = self._check(block)
        self._like = block
        self._received += x.shape[1]
        self._dry = np.concatenate([self._dry, x], axis=1)
        self._tail = np.concatenate([self._tail, x], axis=1)[:, -(self._half + 1):]
        if self._padded is None:
            if self._received <= self._half:  # the start's reflection needs n_fft/2 + 1 samples
                return self._out(np.zeros((self.channels, 0), np.float32), block)
            head = self._dry  # nothing has been emitted yet: `_dry` is the whole input so far
            self._padded = np.concatenate([head[:, self._half:0:-1], head], axis=1)
        else:
            self._padded = np.concatenate([self._padded, x], axis=1)
        return self._out(self._run(final=False), block)

    def flush(self) -> np.ndarray | torch.Tensor:
        """End of the signal: return the remaining output (so that all pushes plus the flush give exactly as many
        samples as were pushed). The stream then refuses pushes until :meth:`reset`."""
        if self._closed:
            raise RuntimeError("this stream was already flushed; call reset() to start a new signal")
        self._closed = True
        like = self._like
        if self._received == 0:
            return self._out(np.zeros((self.channels, 0), np.float32), like)
        tail = self._tail  # the last n_fft/2 + 1 input samples
        if self._padded is None:  # shorter than n_fft/2 + 1 samples: zero-padded first, as the offline adapter does
            tail = np.pad(self._dry, ((0, 0), (0, self._half + 1 - self._dry.shape[1])))
            self._padded = np.concatenate([tail[:, self._half:0:-1], tail], axis=1)
        self._padded = np.concatenate([self._padded, tail[:, -2:-self._half - 2:-1]], axis=1)  # end reflection
        return self._out(self._run(final=True), like)

    # -- the work -----------------------------------------------------------------------------------------------

    def _run(self, final: bool) -> np.ndarray:
        """Compute every frame the padded signal completes, overlap-add them, return the finished output samples."""
        dev = self.denoiser.device
        total = max(self._received, self._half + 1)  # length the offline adapter transforms
        n_frames = 1 + total // self.hop if final else None  # frames of the whole signal (known at the end)
        avail = (self._padded.shape[1] - self.n_fft) // self.hop + 1  # frames the buffer holds
        if n_frames is not None:
            avail = min(avail, n_frames - self._frame)
        done = 0
        while done < avail:
            n = min(avail - done, _MAX_FRAMES)
            seg = torch.from_numpy(np.ascontiguousarray(self._padded[:, done * self.hop:
                                                                   (done + n - 1) * self.hop + self.n_fft]))
            frames = seg.to(dev).unfold(-1, self.n_fft, self.hop)  # (C, n, n_fft)
            spec = torch.fft.rfft(frames * self._window, dim=-1)  # (C, n, F), as torch.stft
            feats = torch.view_as_real(compress(spec, self._power)).permute(0, 3, 2, 1)  # -> (C, 2, F, n)
            with torch.no_grad(), streaming(self._state), autocast_for(dev, self.precision):
                est = self.denoiser.model(feats.contiguous(), self.denoiser.modality).float()  # (C, 2, F, n)
            est = decompress(torch.view_as_complex(est.permute(0, 3, 2, 1).contiguous()), self._power)  # (C, n, F)
            wav = torch.fft.irfft(est, n=self.n_fft, dim=-1) * self._window  # (C, n, n_fft)
            self._overlap_add(self._frame + done, wav)
            done += n
        self._frame += avail
        self._padded = self._padded[:, avail * self.hop:]
        if final:  # everything up to the end of the input is finished
            ready = self._received - self._emitted
        else:  # padded samples before the next frame's start are finished; the first n_fft/2 are the reflection
            ready = max(0, self._frame * self.hop - self._half - self._emitted)
        y = (self._ola[:, :ready] / self._env[:ready].clamp_min(1e-11)).cpu().numpy()  # (C, ready)
        self._ola, self._env = self._ola[:, ready:], self._env[ready:]
        dry, self._dry = self._dry[:, :ready], self._dry[:, ready:]
        self._emitted += ready
        if self._gain > 0.0:
            y = y + self._gain * (dry - y)
        if self.mix < 1.0:
            y = dry + self.mix * (y - dry)
        return y.astype(np.float32, copy=False)

    def _overlap_add(self, first: int, wav: torch.Tensor) -> None:
        """Add frames ``first ..`` (``(C, n, n_fft)``) and their squared-window envelope to the pending output."""
        C, n, _ = wav.shape
        start = first * self.hop - self._half - self._emitted  # position of frame `first` in the pending output
        length = (n - 1) * self.hop + self.n_fft
        need = start + length
        if need > self._ola.shape[1]:
            grow = need - self._ola.shape[1]
            self._ola = torch.cat([self._ola, self._ola.new_zeros(C, grow)], dim=1)
            self._env = torch.cat([self._env, self._env.new_zeros(grow)])
        acc = torch.nn.functional.fold(wav.transpose(1, 2), (1, length), (1, self.n_fft), stride=(1, self.hop))
        env = torch.nn.functional.fold(self._window.square().expand(1, n, -1).transpose(1, 2), (1, length),
                                       (1, self.n_fft), stride=(1, self.hop))
        lo = max(0, -start)  # frames before the first pending sample (the start's reflection) are cut
        self._ola[:, start + lo:need] += acc.reshape(C, length)[:, lo:]
        self._env[start + lo:need] += env.reshape(length)[lo:]

    def _out(self, y: np.ndarray, like: Any) -> np.ndarray | torch.Tensor:
        """``(C, m)`` -> the caller's layout (that of its last block) and type."""
        if self.channels == 1 and like.ndim == 1:
            y = y[0]
        if isinstance(like, torch.Tensor):
            return torch.from_numpy(np.ascontiguousarray(y)).to(device=like.device, dtype=like.dtype)
        return y
