"""Full-band (48 kHz) speech through a 16 kHz model: ``Denoiser.denoise(..., full_band=True)`` (the default: the input
above 8 kHz kept with the gain the network applies to its top octave) against ``full_band=False`` (the output stops at
8 kHz, as a stream's does).

The only clean speech above 16 kHz in the data is VCTK talker p234 (9 files at 48 kHz in ``speech/clean_extra``,
``clearervoice_vctk_p234_*``): a training talker of the bundled models (at 16 kHz: what the network saw of it is its
band below 8 kHz, the same in both rows). The noises are the two validation noises recorded above 16 kHz
(``maxaudio_typing`` at 48 kHz, ``noisereduce_cafe_short`` at 44.1 kHz, resampled to 48 kHz), mixed at 0, 5 and
10 dB (SNR over the whole utterance, full band; noise offset from a fixed seed): 54 mixtures.

Scores against the clean 48 kHz utterance: SI-SDR over the full band, and the SNR of the band above 8 kHz alone (both
signals high-passed with the complement of the resampler's 8 kHz band limit). The band below 8 kHz is the same in both
rows, so its scores (PESQ, STOI: ``speech_quality.py``) do not change.

    python benchmarks/speech_fullband.py [--data ../shared/data] [--model speech|speech_rt|RUN_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402

RATE = 48000
NOISES = ("noise_extra/maxaudio_typing.wav", "noise_extra/noisereduce_cafe_short.wav")
SNRS = (0.0, 5.0, 10.0)


def main() -> int:
    import soundfile as sf

    import xmodal
    from xmodal.data.speech import mix_at_snr
    from xmodal.io import resample
    from xmodal.metrics import si_sdr_score

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="root holding speech/")
    p.add_argument("--model", default="speech", help="bundled name or run directory (default: speech)")
    args = p.parse_args()
    speech = Path(args.data) / "speech"
    cleans = sorted((speech / "clean_extra").glob("clearervoice_vctk_p234_*.wav"))
    if not cleans:
        print(f"error: {speech / 'clean_extra'}: no clearervoice_vctk_p234_*.wav (48 kHz speech)", file=sys.stderr)
        return 2

    def load48(path: Path) -> np.ndarray:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        return x if sr == RATE else resample(x, sr, RATE).numpy()

    def above_8k(x: np.ndarray) -> np.ndarray:
        return x - resample(resample(x, RATE, 16000), 16000, RATE).numpy()[:len(x)]

    den = xmodal.load(args.model)
    noises = [load48(speech / n) for n in NOISES]
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, list[float]]] = {k: {"si_sdr": [], "hb_snr": []} for k in
                                               ("noisy", "full_band=False", "full_band=True")}
    for clean_file in cleans:
        clean = load48(clean_file)
        clean_hb = above_8k(clean)
        for noise in noises:
            for snr in SNRS:
                start = int(rng.integers(0, max(1, len(noise) - len(clean))))
                segment = np.resize(noise[start:] if len(noise) - start >= len(clean) else noise, len(clean))
                noisy = mix_at_snr(clean, segment.astype(np.float32), snr)
                outs = {"noisy": noisy, "full_band=False": den.denoise(noisy, RATE, full_band=False),
                        "full_band=True": den.denoise(noisy, RATE)}
                for name, est in outs.items():
                    rows[name]["si_sdr"].append(si_sdr_score(clean, est))
                    err = np.sum((clean_hb - above_8k(est)) ** 2)
                    rows[name]["hb_snr"].append(10 * np.log10(np.sum(clean_hb ** 2) / max(err, 1e-20)))
    n = len(rows["noisy"]["si_sdr"])
    print(f"{n} mixtures at 48 kHz ({len(cleans)} VCTK p234 utterances x {len(noises)} validation noises x "
          f"{len(SNRS)} SNRs), model {args.model}")
    print(f"{'':18s}{'SI-SDR full band (dB)':>24s}{'SNR above 8 kHz (dB)':>23s}")
    for name, r in rows.items():
        print(f"{name:18s}{np.mean(r['si_sdr']):24.2f}{np.mean(r['hb_snr']):23.2f}")
    gain = np.array(rows["full_band=True"]["si_sdr"]) - np.array(rows["full_band=False"]["si_sdr"])
    print(f"full_band=True - False, SI-SDR per mixture: mean {gain.mean():+.2f} dB, min {gain.min():+.2f}, "
          f"max {gain.max():+.2f}; better on {(gain > 0).sum()} of {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
