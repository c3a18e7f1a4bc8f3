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
  not normalise by the whole signal's RMS (``audio.normalize_rms: false``). It can normalise by the level so far:
  with ``audio.running_rms_seconds`` (the bundled ``speech_rt``: 1 s) each frame is brought to ``audio.target_rms``
  by the RMS of the last second of input and the network's output frame scaled back, in the stream as offline, so
  the output follows the input's level (``denoise(k x) = k denoise(x)``, tested) whatever level the network was
  trained at.
* **Rate.** ``Denoiser.stream(sample_rate=48000)`` takes and returns audio at the audio interface's rate: a
  :class:`StreamResampler` brings each block to the model's rate and the output back, with the same band-limited
  sinc filter as ``Denoiser.denoise`` (``xmodal.io.resample``), so the output still equals ``denoise(whole signal,
  48000)``. The two filters add about 1 ms of delay (:attr:`SpeechStream.delay` counts it).
* **Full band.** Above the model's rate the stream keeps the input's band above the model's, as ``denoise`` does
  (``full_band=True``): a third resampler brings the input's low band back on the estimate's path and delay, and each
  frame's gain (:func:`xmodal.denoise.top_band_gains`) is computed with the frame, before any sample that needs it
  is final, so it adds no latency.

Example:
    >>> den = xmodal.load("speech_rt")  # doctest: +SKIP
    >>> stream = den.stream(channels=1)  # doctest: +SKIP
    >>> for block in microphone_blocks():  # e.g. 10 ms = 160 samples at a time  # doctest: +SKIP
    ...     speaker.write(stream.push(block))  # doctest: +SKIP
    >>> speaker.write(stream.flush())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from xmodal.adapters.audio import compress, decompress, frame_power, running_gains
from xmodal.denoise import _check_options, _check_precision, _check_rate, _float_numpy, _limit_gain, gains_at, \
    top_band_gains
from xmodal.inference import autocast_for
from xmodal.models.layers import StreamState, streaming

__all__ = ["SpeechStream", "StreamResampler"]

_MAX_FRAMES = 512  # frames per network call when a push brings many (bounded memory for big pushes)


class StreamResampler:
    """Band-limited resampling of a signal that arrives in blocks: the outputs of all :meth:`push` calls plus
    :meth:`flush` equal :func:`xmodal.io.resample` of the whole signal (torchaudio's windowed sinc, Hann window,
    6 zero crossings, roll-off 0.99; to float rounding, tested).

    With the rates reduced by their greatest common divisor to ``orig`` and ``new``, output samples come ``new`` at a
    time, each group from a window of ``2 width + orig`` input samples; a group is returned as soon as its window is
    complete, so the output lags the input by ``width`` input samples (:attr:`delay`) plus up to ``orig - 1`` while
    a group completes (:attr:`max_delay`): 19 to 21 samples (0.4 ms) from 48 to 16 kHz, 7 from 16 to 48 kHz, but 17
    to 457 (10 ms) from 44.1 to 16 kHz, whose groups are 441 samples long. The start and the end are zero-padded, as
    offline.

    Args:
        orig_freq, new_freq: rates in Hz (positive integers).
        channels: channels of the blocks (``(C, n)`` float32 numpy arrays).
        device: where the filter runs.
    """

    def __init__(self, orig_freq: int, new_freq: int, channels: int = 1, device: str | torch.device = "cpu") -> None:
        orig_freq, new_freq = _check_rate(orig_freq), _check_rate(new_freq)
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        g = math.gcd(orig_freq, new_freq)
        self.orig_freq, self.new_freq, self.channels = orig_freq, new_freq, int(channels)
        self._o, self._n = orig_freq // g, new_freq // g
        self._kernel, self._width = _sinc_kernel(self._o, self._n, device)
        self._size = self._kernel.shape[-1]  # 2 width + orig
        self.reset()

    @property
    def delay(self) -> int:
        """The least lag of the output behind the input, in input samples: the filter's half width."""
        return self._width

    @property
    def max_delay(self) -> int:
        """The most lag, in input samples: :attr:`delay` plus ``orig - 1`` while a group completes."""
        return self._width + self._o - 1

    def reset(self) -> None:
        """Forget the signal (the next push starts a new one)."""
        self._buf = np.zeros((self.channels, self._width), np.float32)  # zero-padded input from the next group on
        self._received = 0
        self._emitted = 0
        self._closed = False

    def push(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Add ``(C, n)`` float input samples; return the ``(C, m)`` float32 output samples they complete.

        Raises:
            TypeError: not a float array or tensor. ValueError: not ``(channels, n)``.
            RuntimeError: the resampler was flushed (call :meth:`reset`).
        """
        if self._closed:
            raise RuntimeError("this resampler was flushed; call reset() to start a new signal")
        x = _float_numpy(x, "block")
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"Expected a block of shape ({self.channels}, n) for a {self.channels}-channel resampler, "
                             f"got {tuple(x.shape)}")
        self._received += x.shape[1]
        self._buf = np.concatenate([self._buf, x], axis=1)
        return self._run(None)

    def flush(self) -> np.ndarray:
        """End of the signal: the remaining output (the total is ``ceil(n_in * new_freq / orig_freq)``)."""
        if self._closed:
            raise RuntimeError("this resampler was already flushed; call reset() to start a new signal")
        self._closed = True
        self._buf = np.concatenate([self._buf, np.zeros((self.channels, self._width + self._o), np.float32)], axis=1)
        return self._run(-(-self._n * self._received // self._o))

    def _run(self, total: int | None) -> np.ndarray:
        frames = (self._buf.shape[1] - self._size) // self._o + 1 if self._buf.shape[1] >= self._size else 0
        if frames <= 0:
            return np.zeros((self.channels, 0), np.float32)
        used = torch.from_numpy(np.ascontiguousarray(self._buf[:, :(frames - 1) * self._o + self._size]))
        out = torch.nn.functional.conv1d(used.to(self._kernel.device)[:, None], self._kernel, stride=self._o)
        y = out.transpose(1, 2).reshape(self.channels, -1).cpu().numpy()  # (C, frames * new)
        self._buf = self._buf[:, frames * self._o:]
        if total is not None:
            y = y[:, :max(0, total - self._emitted)]
        self._emitted += y.shape[1]
        return y


def _sinc_kernel(orig: int, new: int, device: str | torch.device) -> tuple[torch.Tensor, int]:
    """torchaudio's ``sinc_interp_hann`` kernel (6 zero crossings, roll-off 0.99) for reduced rates ``orig`` ->
    ``new``, computed in float32 as ``torchaudio.functional.resample`` does for float32 input: ``(new, 1, 2 width +
    orig)`` and ``width``."""
    zeros, base = 6, min(orig, new) * 0.99
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t = (t * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel.to(device), width


class _FrameStream:
    """The model-rate part of a stream: STFT frames as the samples complete them, the causal network on those frames
    (continuing from its :class:`StreamState`), overlap-added inverse frames. Returns the network's estimate only
    (no mix, no limit): the outputs of all pushes plus :meth:`flush` equal the offline adapter's decode of the whole
    signal."""

    def __init__(self, denoiser: Any, channels: int, precision: str, full_band: bool = False) -> None:
        self.denoiser, self.channels, self.precision, self.full_band = denoiser, channels, precision, full_band
        audio = denoiser.adapter
        self.n_fft, self.hop = int(audio.n_fft), int(audio.hop_length)
        self._half = self.n_fft // 2
        self._window = audio.full_window(denoiser.device)  # torch.stft centres a shorter window in n_fft
        self._level = audio.level_frames  # running level normalisation (audio.running_rms_seconds), 0 = off
        self._power = float(denoiser.config.audio.compress)
        self.reset()

    def reset(self) -> None:
        self._state = StreamState()
        self._received = 0  # input samples pushed
        self._emitted = 0  # output samples returned
        self._head = np.zeros((self.channels, 0), np.float32)  # the input until the start's reflection can be made
        self._tail = np.zeros((self.channels, 0), np.float32)  # the last n_fft/2 + 1 input samples (end reflection)
        self._padded: np.ndarray | None = None  # reflect-padded signal from `_frame * hop` on (None until started)
        self._frame = 0  # next frame to compute
        C = self.channels
        self._ola = torch.zeros(C, 0, device=self.denoiser.device)  # overlap-add from padded index `_emitted + half`
        self._env = torch.zeros(0, device=self.denoiser.device)
        self._powers = np.zeros((1, 0))  # mean squares of the last frames (running level)
        self.top_gains = np.zeros((self.channels, 0), np.float32)  # (C, K) gains above the model's band, frames
        # top_first, top_first + 1...
        self.top_first = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        self._received += x.shape[1]
        self._tail = np.concatenate([self._tail, x], axis=1)[:, -(self._half + 1):]
        if self._padded is None:
            self._head = np.concatenate([self._head, x], axis=1)
            if self._received <= self._half:  # the start's reflection needs n_fft/2 + 1 samples
                return np.zeros((self.channels, 0), np.float32)
            head, self._head = self._head, self._head[:, :0]
            self._padded = np.concatenate([head[:, self._half:0:-1], head], axis=1)
        else:
            self._padded = np.concatenate([self._padded, x], axis=1)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        if self._received == 0:
            return np.zeros((self.channels, 0), np.float32)
        tail = self._tail  # the last n_fft/2 + 1 input samples
        if self._padded is None:  # shorter than n_fft/2 + 1 samples: zero-padded first, as the offline adapter does
            tail = np.pad(self._head, ((0, 0), (0, self._half + 1 - self._head.shape[1])))
            self._padded = np.concatenate([tail[:, self._half:0:-1], tail], axis=1)
        self._padded = np.concatenate([self._padded, tail[:, -2:-self._half - 2:-1]], axis=1)  # end reflection
        return self._run(final=True)

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
            gain = None
            if self._level:
                gain = self._gains(spec, self._frame + done)  # (n,)
                spec = spec * gain[:, None]
            feats = torch.view_as_real(compress(spec, self._power)).permute(0, 3, 2, 1)  # -> (C, 2, F, n)
            with torch.no_grad(), streaming(self._state), autocast_for(dev, self.precision):
                est = self.denoiser.model(feats.contiguous(), self.denoiser.modality).float()  # (C, 2, F, n)
            est = decompress(torch.view_as_complex(est.permute(0, 3, 2, 1).contiguous()), self._power)  # (C, n, F)
            if gain is not None:
                est = est / gain[:, None]
            if self.full_band:  # (C, n, F): the input's frames before the level gain, the estimate's after undoing it
                raw = spec / gain[:, None] if gain is not None else spec
                gains = top_band_gains(raw.transpose(1, 2), est.transpose(1, 2)).float().cpu().numpy()  # (C, n)
                self.top_gains = np.concatenate([self.top_gains, gains], axis=1)
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
        self._emitted += ready
        return y

    def _gains(self, spec: torch.Tensor, first: int) -> torch.Tensor:
        """Running-level gains ``(n,)`` of frames ``first .. first + n - 1`` (``spec: (C, n, F)``), as the offline
        adapter gives them (the channels share one level)."""
        power = frame_power(spec, self._window, dim=-1).mean(0, keepdims=True)  # (C, n) -> (1, n)
        gain = running_gains(power, self._powers, first, self._level, self.denoiser.config.audio.target_rms)
        kept = np.concatenate([self._powers, power], axis=1)
        self._powers = kept[:, kept.shape[1] - min(kept.shape[1], self._level - 1):]  # the last `level - 1` frames
        return torch.from_numpy(gain[0]).to(spec.device)

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


class SpeechStream:
    """One real-time denoising stream (build it with :meth:`xmodal.Denoiser.stream`).

    Args:
        denoiser: a :class:`xmodal.Denoiser` whose model is causal and does not normalise by the whole signal's RMS
            (a running level, ``audio.running_rms_seconds``, streams).
        channels: channels of the audio pushed (processed as a batch; each keeps its own network state).
        mix, atten_limit_db: as in :meth:`xmodal.Denoiser.denoise` (dry/wet and attenuation limit).
        precision: ``fp32`` or ``bf16`` (autocast) for the network.
        sample_rate: rate of the audio pushed and returned; ``None`` = the model's. Another rate is resampled to
            the model's and back inside the stream (:class:`StreamResampler`).

    Raises:
        ValueError: the model is not causal or normalises by the whole signal's RMS, or an argument is out of range.
    """

    def __init__(self, denoiser: Any, channels: int = 1, *, mix: float = 1.0, atten_limit_db: float | None = None,
                 precision: str = "fp32", sample_rate: int | None = None, full_band: bool = True) -> None:
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
        self.model_rate = int(denoiser.adapter.sample_rate)
        self.sample_rate = self.model_rate if sample_rate is None else _check_rate(sample_rate)
        self.full_band = bool(full_band) and self.sample_rate > self.model_rate
        self._frames = _FrameStream(denoiser, self.channels, self.precision, self.full_band)
        self.n_fft, self.hop = self._frames.n_fft, self._frames.hop
        self._down = self._up = self._up_low = None
        if self.sample_rate != self.model_rate:
            dev = denoiser.device
            self._down = StreamResampler(self.sample_rate, self.model_rate, self.channels, dev)
            self._up = StreamResampler(self.model_rate, self.sample_rate, self.channels, dev)
            if self.full_band:  # the input's band below the model's limit, on the estimate's path and delay
                self._up_low = StreamResampler(self.model_rate, self.sample_rate, self.channels, dev)
        self.reset()

    def __repr__(self) -> str:
        return (f"SpeechStream({self.denoiser.name or 'model'}, channels={self.channels}, "
                f"sample_rate={self.sample_rate}, delay={self.delay})")

    @property
    def delay(self) -> int:
        """The algorithmic latency, in samples at the stream's rate: how far the end of the output returned lags
        the end of the input pushed, at best. At the model's rate and for pushes of whole hops this is exactly
        the lag after every push: ``n_fft - hop``. At another rate it adds the two resampling filters' half widths
        (about 1 ms at 48 kHz)."""
        if self._down is None:
            return self.n_fft - self.hop
        r = self.sample_rate / self.model_rate
        return math.floor(self._down.delay + (self.n_fft - self.hop + self._up.delay) * r)

    @property
    def max_delay(self) -> int:
        """The most the output can lag the input once it has started coming (for any block sizes): :attr:`delay`
        plus the wait for a hop of frames to fill (``hop - 1`` model samples) and, at another rate, for the
        resamplers' sample groups to complete."""
        if self._down is None:
            return self.n_fft - 1
        r = self.sample_rate / self.model_rate
        return math.ceil(self._down.max_delay + (self.n_fft - 1 + self._up.max_delay) * r) + math.ceil(r)

    def reset(self) -> None:
        """Start a new signal (forget the past; the stream can be used again after :meth:`flush`)."""
        self._frames.reset()
        for r in (self._down, self._up, self._up_low):
            if r is not None:
                r.reset()
        self._x16 = np.zeros((self.channels, 0), np.float32)  # model-rate input not yet on the low-band path
        self._received = 0  # input samples pushed
        self._emitted = 0  # output samples returned
        self._dry = np.zeros((self.channels, 0), np.float32)  # input from `_emitted` on (for mix, limit, full band)
        self._like: Any = np.zeros(0 if self.channels == 1 else (self.channels, 0), np.float32)  # caller's layout
        self._closed = False

    # -- input ------------------------------------------------------------------------------------------------

    def _check(self, block: Any) -> np.ndarray:
        x = _float_numpy(block, "block")
        if x.ndim == 1 and self.channels == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.channels:
            expected = "(n,) or (1, n)" if self.channels == 1 else f"({self.channels}, n)"
            hint = "; push block.T for an (n, C) block, as sounddevice gives" \
                if x.ndim == 2 and x.shape[1] == self.channels else ""
            raise ValueError(f"Expected a block of shape {expected} for a {self.channels}-channel stream, "
                             f"got {tuple(x.shape)}{hint}")
        if not np.isfinite(x).all():
            raise ValueError("the block contains NaN or infinite samples")
        return x

    def push(self, block: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Add ``block`` (``(n,)`` for one channel, or ``(C, n)``, float in [-1, 1], at :attr:`sample_rate`, any
        ``n`` including 0) and return the output samples it completes (``(m,)`` or ``(C, m)``, same type as
        ``block``; ``m`` may be 0).

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
        if self.mix < 1.0 or self._gain > 0.0 or self.full_band:  # the input is needed again to mix it in
            self._dry = np.concatenate([self._dry, x], axis=1)
        if self._down is None:
            wet = self._frames.push(x)
            return self._out(self._finish(wet), block)
        x16 = self._down.push(x)
        est = self._frames.push(x16)
        return self._out(self._finish(self._up.push(est), self._low(x16, est.shape[1])), block)

    def _low(self, x16: np.ndarray, count: int) -> np.ndarray | None:
        """The input's band below the model's limit at the stream's rate, for as many samples as the estimate's
        path gives: the model-rate input goes through a resampler like the estimate's, ``count`` samples at a time
        (``None`` without the full band)."""
        if self._up_low is None:
            return None
        self._x16 = np.concatenate([self._x16, x16], axis=1)
        out, self._x16 = self._x16[:, :count], self._x16[:, count:]
        return self._up_low.push(out)

    def flush(self) -> np.ndarray | torch.Tensor:
        """End of the signal: return the remaining output (so that all pushes plus the flush give exactly as many
        samples as were pushed). The stream then refuses pushes until :meth:`reset`."""
        if self._closed:
            raise RuntimeError("this stream was already flushed; call reset() to start a new signal")
        self._closed = True
        if self._received == 0:
            return self._out(np.zeros((self.channels, 0), np.float32), self._like)
        low = None
        if self._down is None:
            wet = self._frames.flush()
        else:
            frames = self._frames
            x16 = self._down.flush()
            e1 = frames.push(x16)
            e2 = frames.flush()
            wet = np.concatenate([self._up.push(e1), self._up.push(e2), self._up.flush()], axis=1)
            if self._up_low is not None:
                low = np.concatenate([self._low(x16, e1.shape[1]), self._low(x16[:, :0], e2.shape[1]),
                                      self._up_low.flush()], axis=1)
        rest = self._received - self._emitted

        def fit(y: np.ndarray) -> np.ndarray:  # the filters' last group can reach past the input's end: cut
            y = y[:, :rest]
            return np.pad(y, ((0, 0), (0, rest - y.shape[1]))) if y.shape[1] < rest else y

        return self._out(self._finish(fit(wet), None if low is None else fit(low)), self._like)

    def _finish(self, wet: np.ndarray, low: np.ndarray | None = None) -> np.ndarray:
        """Add the band above the model's (``low``: the input's band below it, for the full band), apply the
        attenuation limit and the dry/wet mix against the input samples ``wet`` stands for."""
        n = wet.shape[1]
        first = self._emitted
        self._emitted += n
        if self.mix == 1.0 and self._gain == 0.0 and low is None:
            return wet.astype(np.float32, copy=False)
        dry, self._dry = self._dry[:, :n], self._dry[:, n:]
        if low is not None and n:
            frames = self._frames
            per_sample = self.model_rate / (self.sample_rate * self.hop)
            gains = gains_at(frames.top_gains, first, n, per_sample, frames.top_first)  # (C, n)
            wet = wet + gains * (dry - low)
            keep = int(self._emitted * per_sample) - frames.top_first  # frames no later sample needs
            keep = max(0, min(keep, frames.top_gains.shape[1] - 1))
            frames.top_gains, frames.top_first = frames.top_gains[:, keep:], frames.top_first + keep
        if self._gain > 0.0:
            wet = wet + self._gain * (dry - wet)
        if self.mix < 1.0:
            wet = dry + self.mix * (wet - dry)
        return wet.astype(np.float32, copy=False)

    def _out(self, y: np.ndarray, like: Any) -> np.ndarray | torch.Tensor:
        """``(C, m)`` -> the caller's layout (that of its last block) and type."""
        if self.channels == 1 and like.ndim == 1:
            y = y[0]
        if isinstance(like, torch.Tensor):
            return torch.from_numpy(np.ascontiguousarray(y)).to(device=like.device, dtype=like.dtype)
        return y
