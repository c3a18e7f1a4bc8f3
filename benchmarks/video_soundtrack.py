"""Soundtracks of video files through ``xmodal.denoise --audio denoise``: what the video container path costs the speech
model against denoising the same recordings as arrays (``speech_quality.py``), and whether the sound stays in sync.

Each SPLITS.md validation mixture (19 unseen talkers x 4 unseen noises at ``--snrs``, the mixtures of
``speech_quality.py``) becomes the soundtrack of a short video as a phone writes it: upsampled to 48 kHz, AAC at
``--bitrate`` in an ``.mp4`` beside a small gray H.264 picture at ``--fps`` (10 by default: the picture only carries
the sound here, and its frames are most of the time). Then, through
``VideoDenoiser.denoise_file(..., audio=xmodal.load("speech"))`` (what ``--audio denoise`` runs):

- ``.mp4`` out: the denoised track re-encoded as AAC (what a user keeps by default for an ``.mp4``);
- ``.mkv`` out: the denoised track as FLAC (lossless 16 bits): the container path without a lossy codec after it.

Rows scored against the clean utterance (decoded, resampled to 16 kHz, placed by the stream's timestamps, cut to the
utterance): the noisy soundtrack as the source ``.mp4`` holds it, both outputs, and ``Denoiser.denoise`` on the
16 kHz mixture array itself (the reference: ``speech_quality.py``'s figure for the same mixtures). ``offset`` is the
lag (in 16 kHz samples) of the best cross-correlation between each output and the reference: 0 means in sync.

    python benchmarks/video_soundtrack.py [--data ../shared/data] [--snrs 5] [--limit N] [--bitrate 128000]
                                          [--fps 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, bundled_speech_config  # noqa: E402

METRICS = ("pesq", "stoi", "si_sdr")
RATE = 48000  # what video files carry


def write_source(path: Path, wave48: np.ndarray, bitrate: int, fps: int) -> None:
    """A gray 64 x 64 H.264 picture (a slow ramp) at ``fps`` for the length of ``wave48`` (mono, 48 kHz) as AAC."""
    import av

    frames = int(np.ceil(wave48.shape[-1] / RATE * fps))
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=RATE, layout="mono")
        a.bit_rate = bitrate
        for t in range(frames):
            image = np.full((64, 64), 60 + t % 100, np.uint8)
            for packet in v.encode(av.VideoFrame.from_ndarray(image, format="gray")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        frame = av.AudioFrame.from_ndarray(wave48[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
        for packet in [*a.encode(frame), *a.encode()]:
            out.mux(packet)


def soundtrack16(path: Path, length: int) -> np.ndarray:
    """The first audio stream of ``path``, mono, at 16 kHz, sample 0 at the first video frame, ``length`` long."""
    import av

    from xmodal.io import resample

    with av.open(str(path)) as c:
        v, s = c.streams.video[0], c.streams.audio[0]
        v0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        with av.open(str(path)) as r:
            frames = list(r.decode(r.streams[s.index]))
    start = float(frames[0].pts * frames[0].time_base) - v0
    parts = []
    for f in frames:
        x = f.to_ndarray()
        x = x.astype(np.float32) / 32768 if x.dtype == np.int16 else x.astype(np.float32)
        parts.append(x.reshape(-1, f.layout.nb_channels).T if f.format.is_packed else x)
    wave = np.concatenate(parts, axis=1).mean(axis=0)
    rate = int(s.codec_context.rate)
    skip = round(-start * rate)  # samples before the first frame (encoder delay) are dropped, a late start padded
    wave = wave[skip:] if skip >= 0 else np.concatenate([np.zeros(-skip, np.float32), wave])
    wave16 = resample(wave, rate, 16000).numpy()
    return np.pad(wave16, (0, max(0, length - wave16.shape[-1])))[:length]


def lag(ref: np.ndarray, x: np.ndarray, most: int = 800) -> int:
    """Lag of ``x`` behind ``ref`` (samples, within +-``most``) at the best cross-correlation."""
    n = 1 << int(np.ceil(np.log2(len(ref) + len(x))))
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[0:most + 1, -most:0]
    return int(lags[np.argmax(corr[lags])])


def main() -> int:
    from xmodal.data import resolve_speech_data
    from xmodal.io import resample
    from xmodal.metrics import MetricAccumulator, speech_metrics

    import xmodal

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="root holding speech/")
    p.add_argument("--snrs", default="5", help="comma-separated SNRs of the validation mixtures (0, 5, 10)")
    p.add_argument("--limit", type=int, default=0, help="only the first N mixtures")
    p.add_argument("--bitrate", type=int, default=128000, help="AAC bit rate of the source soundtracks")
    p.add_argument("--fps", type=int, default=10, help="frame rate of the picture beside the sound (default 10)")
    args = p.parse_args()
    snrs = {f"{float(s):g}dB" for s in args.snrs.split(",")}
    cfg = bundled_speech_config(args.data)
    sr = cfg.audio.sample_rate
    clips = [c for c in resolve_speech_data(cfg.data, sr, "/nonexistent").valid
             if c.name.split("@")[1] in snrs]
    if args.limit:
        clips = clips[:args.limit]
    speech, video = xmodal.load("speech"), xmodal.load("video_gray")
    acc = MetricAccumulator()
    offsets: dict[str, list[int]] = {"mp4 (AAC)": [], "mkv (FLAC)": []}
    seconds = {"array": 0.0, "video files": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for i, clip in enumerate(clips):
            noisy, clean = clip.noisy[0].numpy(), clip.clean[0].numpy()
            src = Path(tmp) / "src.mp4"
            write_source(src, resample(noisy, sr, RATE).numpy(), args.bitrate, args.fps)
            t = time.perf_counter()
            reference = np.asarray(speech.denoise(noisy, sr))
            seconds["array"] += time.perf_counter() - t
            rows = {"noisy (source .mp4)": soundtrack16(src, len(clean)), "array (reference)": reference}
            for name, ext in (("mp4 (AAC)", ".mp4"), ("mkv (FLAC)", ".mkv")):
                dst = Path(tmp) / f"out{ext}"
                t = time.perf_counter()
                video.denoise_file(src, dst, overwrite=True, audio=speech)
                seconds["video files"] += time.perf_counter() - t
                rows[name] = soundtrack16(dst, len(clean))
                offsets[name].append(lag(reference, rows[name]))
            for name, est in rows.items():
                speech_metrics(acc, name, clip.name, clean, est, sr, metrics=METRICS)
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{len(clips)} mixtures", file=sys.stderr)
    means = acc.means()
    print(f"{len(clips)} validation mixtures at {', '.join(sorted(snrs))} as .mp4 soundtracks (AAC "
          f"{args.bitrate // 1000} kbit/s, 48 kHz mono; picture at {args.fps} fps); bundled speech model; PESQ "
          "wide-band, STOI, SI-SDR at 16 kHz")
    print(f"{'':22s}" + "".join(f"{m:>9s}" for m in METRICS) + "   offset (samples at 16 kHz)")
    for name in ("noisy (source .mp4)", "array (reference)", "mp4 (AAC)", "mkv (FLAC)"):
        off = offsets.get(name)
        text = f"   {min(off):+d} .. {max(off):+d}" if off else ""
        print(f"{name:22s}" + "".join(f"{means[name][m]:9.3f}" for m in METRICS) + text)
    print(f"time: speech model on the arrays {seconds['array']:.1f} s; both video files (decode, denoise picture and "
          f"sound, encode, mux) {seconds['video files']:.1f} s")
    if acc.failures:
        print(f"{len(acc.failures)} metric failures: " + "; ".join(f"{r}/{m}/{i}: {why}"
                                                                    for r, m, i, why in acc.failures[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
