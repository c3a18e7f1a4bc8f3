"""Training throughput (samples/s) of a speech recipe on this machine, fp32 vs bf16 autocast.

Times full optimisation steps (encode, forward, decode, losses, backward, clip, AdamW) on fixed random batches, so the
figure is the model's, not the data loader's.

    python benchmarks/train_throughput.py [--recipe recipes/speech.yaml] [--steps 20] [--batch 8] [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from xmodal.config import load_config
from xmodal.inference import autocast_for
from xmodal.losses import SpeechLoss
from xmodal.config import Config
from xmodal.modalities import make_adapter, modality_io
from xmodal.models import build_model


def measure(config, precision: str, steps: int, batch: int, seconds: float) -> float:
    torch.manual_seed(0)
    adapter = make_adapter("speech", config)
    model = build_model(config.model, {"speech": modality_io("speech", Config())})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = SpeechLoss(config.loss)
    T = int(seconds * config.audio.sample_rate)
    clean = torch.randn(batch, 1, T) * 0.05
    noisy = clean + torch.randn(batch, 1, T) * 0.05
    device = torch.device("cpu")

    def step() -> None:
        feats, ctx = adapter.encode(noisy)
        target, _ = adapter.encode(clean, ctx)
        with autocast_for(device, precision):
            est = model(feats, "speech")
        est = est.float()
        wave = adapter.decode(est, ctx)
        loss, _ = loss_fn(adapter.normalize(wave, ctx), adapter.normalize(clean, ctx), est, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="recipes/speech.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    config = load_config(args.recipe, args.overrides)
    n = sum(p.numel() for p in build_model(config.model, {"speech": modality_io("speech", Config())}).parameters())
    print(f"recipe {args.recipe} {' '.join(args.overrides)}: {config.model.arch} {list(config.model.widths)}, "
          f"{n / 1e6:.3f} M parameters, batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} threads")
    for precision in ("fp32", "bf16"):
        rate = measure(config, precision, args.steps, args.batch, args.seconds)
        print(f"  {precision}: {rate:6.2f} samples/s ({rate * args.seconds:6.1f} s of audio per s)")


if __name__ == "__main__":
    main()
