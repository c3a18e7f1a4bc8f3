"""A short real training run on the shared speech data; prints validation PESQ/STOI/ESTOI/SI-SDR against the noisy
input.

Uses `recipes/speech_bundled.yaml` (the SPLITS.md split: unseen talkers x unseen noises at 0, 5, 10 dB) with the data
root taken from --data, so the numbers are comparable with the bundled model's card.

    python benchmarks/speech_training_run.py [--data ../shared/data] [--steps 1500] [--run-dir runs/bench_speech]
"""

from __future__ import annotations

import argparse
import sys

from _common import DEFAULT_DATA, bundled_speech_config
from xmodal.train import format_report, train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="root holding speech/")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--run-dir", default="runs/bench_speech")
    p.add_argument("overrides", nargs="*", help="extra key.sub=value overrides")
    args = p.parse_args()
    config = bundled_speech_config(args.data, [f"train.max_steps={args.steps}", f"train.run_dir={args.run_dir}",
                                               f"train.eval_every={args.steps}", *args.overrides])
    result = train(config)
    print(f"\nvalidation after {result.step} steps ({config.train.batch_size} x {config.data.segment_seconds:g} s "
          f"per step, {config.train.precision}):")
    print(format_report(result.validation))
    gain = {m: result.validation["enhanced"][m] - result.validation["noisy"][m] for m in ("pesq", "si_sdr")}
    print(f"improvement over the noisy input: PESQ {gain['pesq']:+.3f}, SI-SDR {gain['si_sdr']:+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
