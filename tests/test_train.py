import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TINY
from xmodal import checkpoint as ckpt
from xmodal.config import ConfigError, load_config
from xmodal.inference import enhance
from xmodal.modalities import make_adapter
from xmodal.train import cosine_with_warmup, main, train


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_train_save_load_identical_output(tiny_config):
    from dataclasses import replace

    tiny_config = replace(tiny_config, train=replace(tiny_config.train, tensorboard=True))
    result = train(tiny_config)
    run = result.run_dir
    for name in ("model.safetensors", "best.safetensors", "config.yaml", "train_state.pt", "log.txt",
                 "metrics.jsonl", "validation.json"):
        assert (run / name).is_file(), name
    assert result.step == tiny_config.train.max_steps and len(result.losses) == result.step
    assert load_config(run / "config.yaml") == tiny_config
    assert set(result.validation) == {"noisy", "enhanced"}
    assert np.isfinite(result.validation["noisy"]["pesq"]) and np.isfinite(result.validation["enhanced"]["si_sdr"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"audio": 0, "scalars": 0}).Reload()
    assert "valid/enhanced_0" in events.Tags()["audio"]
    assert {"train/loss", "train/lr", "valid/enhanced/pesq", "valid/noisy/si_sdr"} <= set(events.Tags()["scalars"])
    saved = json.loads((run / "validation.json").read_text())
    assert saved["report"]["enhanced"]["pesq"] == pytest.approx(result.validation["enhanced"]["pesq"])

    loaded, cfg = ckpt.load_run(run)
    assert cfg == tiny_config
    adapter = make_adapter("speech", cfg)
    wave = torch.randn(2, 1, 5000) * 0.1
    result.model.eval()
    assert torch.equal(enhance(loaded, adapter, wave, "speech"), enhance(result.model, adapter, wave, "speech"))
    # the weights file carries its config: loadable on its own
    alone, cfg2 = ckpt.load_run(run / "model.safetensors")
    assert cfg2 == tiny_config
    assert torch.equal(enhance(alone, adapter, wave, "speech"), enhance(loaded, adapter, wave, "speech"))


def test_resume_equals_uninterrupted(tiny_config, tmp_path):
    from dataclasses import replace

    full = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "a"), max_steps=6,
                                              save_every=0))
    stopped = replace(full, train=replace(full.train, run_dir=str(tmp_path / "b")))
    a = train(full)
    b1 = train(stopped, stop_after=3)
    assert b1.step == 3 and not (tmp_path / "b" / "validation.json").exists()
    b2 = train(stopped)
    assert b2.resumed_from == 3 and b2.step == 6
    assert b2.losses == pytest.approx(a.losses[3:], rel=1e-6, abs=1e-9)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-7, rtol=0)
    # a finished run only reports
    b3 = train(stopped)
    assert b3.step == 6 and b3.losses == [] and b3.resumed_from == 6


def test_resume_applies_changed_optimizer_settings(tiny_config, tmp_path, capsys):
    """optim keys may change on resume (a lower lr to fine-tune): the new lr, weight decay and betas are used from
    the next step on, not the saved state's, the log says what changed, and the logged lr is the one each step ran
    with."""
    from dataclasses import replace

    from xmodal.train import cosine_with_warmup

    cfg = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "r"), max_steps=6, log_every=1,
                                             save_every=0))
    train(cfg, stop_after=2)
    oc = replace(cfg.optim, lr=1e-5, weight_decay=0.5, betas=(0.8, 0.99))
    train(replace(cfg, optim=oc))
    assert "resumed from" in capsys.readouterr().out and "at step 2 with optim.lr 0.002 -> 1e-05, optim.weight_decay " \
        "0.01 -> 0.5, optim.betas (0.9, 0.999) -> (0.8, 0.99)" in (tmp_path / "r" / "log.txt").read_text()
    logged = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "train"}
    for step in range(1, 7):  # step k ran with the schedule's value at k - 1
        peak = cfg.optim.lr if step <= 2 else 1e-5
        assert logged[step] == pytest.approx(peak * cosine_with_warmup(step - 1, oc.warmup_steps, 6, oc.min_lr_ratio))
    groups = ckpt.load_train_state(tmp_path / "r" / ckpt.STATE)["optimizer"]["param_groups"]
    assert [(g["weight_decay"], tuple(g["betas"])) for g in groups] == [(0.5, (0.8, 0.99)), (0.0, (0.8, 0.99))]


def test_resume_refuses_a_different_model(tiny_config):
    train(tiny_config, stop_after=1)
    from dataclasses import replace

    other = replace(tiny_config, model=replace(tiny_config.model, widths=(4, 8)))
    with pytest.raises(ConfigError, match=r"holds a run with a different `model` config; use another train.run_dir"):
        train(other)
    fresh = replace(other, train=replace(other.train, resume=False))
    assert train(fresh, stop_after=1).resumed_from == 0


def test_starting_over_clears_the_old_runs_records(tiny_config):
    """train.resume=false starts over: the old run's weights, best checkpoint, validation, logs and TensorBoard
    events go (its metrics were appended to the new run's, an old best.safetensors outlived it), the log says so;
    other files in the run directory stay."""
    from dataclasses import replace

    run = Path(tiny_config.train.run_dir)
    old = replace(tiny_config, train=replace(tiny_config.train, max_steps=2, log_every=1, tensorboard=True))
    train(old)
    assert (run / ckpt.BEST).is_file() and (run / "validation.json").is_file() and list((run / "tb").iterdir())
    (run / "notes.txt").write_text("mine")
    new = replace(old, train=replace(old.train, resume=False))
    train(new, stop_after=1)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]
    log = (run / "log.txt").read_text()
    assert log.count("xmodal train:") == 1 and "step 2/2" not in log
    assert f"started over in {run}: removed the previous run's model.safetensors, best.safetensors, " \
           "train_state.pt, validation.json, log.txt, metrics.jsonl, tb/events.out." in log
    assert not (run / ckpt.BEST).exists() and not (run / "validation.json").exists()
    assert len(list((run / "tb").glob("events.out.*"))) == 1 and (run / "notes.txt").read_text() == "mine"
    assert ckpt.load_train_state(run / ckpt.STATE)["step"] == 1


def test_bf16_autocast_and_fp16_refused_on_cpu(tiny_config):
    from dataclasses import replace

    r = train(replace(tiny_config, train=replace(tiny_config.train, precision="bf16", max_steps=2)))
    assert all(np.isfinite(r.losses))
    with pytest.raises(ValueError, match=r"train.precision 'fp16' needs a CUDA device \(use 'bf16' on CPU\)"):
        train(replace(tiny_config, train=replace(tiny_config.train, precision="fp16")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_cuda_device_refused_without_cuda(tiny_config):
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"train.device is 'cuda' but no CUDA device is available"):
        train(replace(tiny_config, train=replace(tiny_config.train, device="cuda")))


def test_failing_validation_clip_is_recorded_not_fatal(tmp_path, demo_corpus):
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    for f in demo_corpus[0].iterdir():
        if f.suffix == ".wav":
            (clean_dir / f.name).write_bytes(f.read_bytes())
    sf.write(clean_dir / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    cfg = load_config(TINY, [f"train.run_dir={tmp_path / 'run'}", f"data.clean_dir={clean_dir}",
                             f"data.noise_dir={demo_corpus[1]}", "data.valid_clean=[silent.wav]",
                             "train.max_steps=1"])
    result = train(cfg)
    assert result.failures >= 3  # pesq, si_sdr and stoi on the silent reference, for noisy and enhanced
    log = (tmp_path / "run" / "log.txt").read_text()
    assert re.search(r"\d+ metric failures\):", log)
    # and why: each distinct failure on its own line (at most 5), naming the metric, the row and the clip
    assert re.search(r"\n  failed: si_sdr of noisy 'silent\+\S+': si_sdr failed: the reference is silent\n", log), log
    assert log.count("\n  failed: ") == 5 and "\n  ... and 3 more" in log  # 8 failures: 4 metrics x 2 rows


def test_cosine_with_warmup():
    assert cosine_with_warmup(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert cosine_with_warmup(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_cli_demo_run(tmp_path, capsys):
    run = tmp_path / "demo_run"
    assert main([str(TINY), f"train.run_dir={run}", "train.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "DEMO run on a synthetic corpus" in out and "done: 2 steps" in out
    assert (run / "demo_data" / "clean").is_dir() and (run / "model.safetensors").is_file()


def test_cli_stop_after_then_resume(tmp_path, tiny_config, capsys):
    d = tiny_config.data
    args = [str(TINY), f"train.run_dir={tmp_path / 'r'}", f"data.clean_dir=[{d.clean_dir[0]}]",
            f"data.noise_dir=[{d.noise_dir[0]}]", "data.valid_fraction=0.25"]
    assert main(args + ["--stop-after", "1"]) == 0
    assert "done: 1 steps" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 1" in out and "done: 4 steps" in out
    assert main(args + ["--stop-after", "0"]) == 2
    assert "--stop-after must be at least 1, got 0" in capsys.readouterr().err


def test_cli_ctrl_c_saves_and_exits_130(tmp_path, tiny_config, capsys, monkeypatch):
    """Ctrl-C during training: the checkpoint of the step reached is saved, a line says so, exit status 130 (the
    shell's for SIGINT), no traceback; the same command resumes from there."""
    d = tiny_config.data
    args = [str(TINY), f"train.run_dir={tmp_path / 'r'}", f"data.clean_dir=[{d.clean_dir[0]}]",
            f"data.noise_dir=[{d.noise_dir[0]}]", "data.valid_fraction=0.25"]
    clip, calls = torch.nn.utils.clip_grad_norm_, []

    def interrupt_third_step(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt_third_step)
    assert main(args) == 130
    assert "interrupted at step 2; checkpoint saved, run the same command to resume" in capsys.readouterr().out
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=False)["step"] == 2
    monkeypatch.undo()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "at step 2" in out and "done: 4 steps" in out


def test_cli_sigterm_saves_and_exits_143(tmp_path, tiny_config, capsys, monkeypatch, python_sigterm):
    """SIGTERM (a job scheduler pre-empting the run) arriving inside step 3: the step is finished and saved, a line
    says so, exit status 143 (128 + SIGTERM); the handler is given back and the same command resumes."""
    d = tiny_config.data
    args = [str(TINY), f"train.run_dir={tmp_path / 'r'}", f"data.clean_dir=[{d.clean_dir[0]}]",
            f"data.noise_dir=[{d.noise_dir[0]}]", "data.valid_fraction=0.25", "train.save_every=100"]
    clip, calls = torch.nn.utils.clip_grad_norm_, []

    def terminate_in_third_step(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", terminate_in_third_step)
    assert main(args) == 143
    assert "stopped by SIGTERM at step 3; checkpoint saved, run the same command to resume" in capsys.readouterr().out
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=False)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is python_sigterm
    monkeypatch.undo()
    assert main(args) == 0
    assert "done: 4 steps" in capsys.readouterr().out


def test_ddp_signal_on_one_rank_stops_both_after_the_same_step(tiny_config, tmp_path):
    """Ctrl-C seen by rank 1 only, inside step 3 (its third gradient clip): both ranks stop after step 3 (a rank that
    went on would wait for the other's gradients: rank 0 crashed in its backward and saved nothing), rank 0 saves
    that step, rank 1 exits 130 (torchrun then ends rank 0, already past its checkpoint), and the run resumes."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, torch\n"
        "if os.environ.get('RANK') == '1':\n"
        "    clip, calls = torch.nn.utils.clip_grad_norm_, []\n"
        "    def clip_and_signal(*a, **k):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 3:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return clip(*a, **k)\n"
        "    torch.nn.utils.clip_grad_norm_ = clip_and_signal\n")
    d = tiny_config.data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xmodal.train",
           str(TINY), f"train.run_dir={tmp_path / 'two'}", "train.max_steps=6", "train.save_every=100",
           f"data.clean_dir=[{d.clean_dir[0]}]", f"data.noise_dir=[{d.noise_dir[0]}]",
           f"data.valid_fraction={d.valid_fraction}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}
    # a worker's SIGINT handler is installed only where SIGINT is not ignored (a background job ignores it)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode != 0
    assert "interrupted at step 3; checkpoint saved, run the same command to resume" in proc.stdout, \
        proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "exitcode  : 130" in proc.stderr or "exitcode: 130" in proc.stderr, proc.stderr[-3000:]
    assert torch.load(tmp_path / "two" / "train_state.pt", weights_only=False)["step"] == 3
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "done: 6 steps" in proc.stdout


def test_cli_errors(tmp_path, capsys):
    assert main([str(TINY), "train.max_stepz=2"]) == 2
    assert "unknown key `train.max_stepz` (did you mean `train.max_steps`?)" in capsys.readouterr().err
    assert main([str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: recipe file not found" in capsys.readouterr().err
    assert main([str(TINY), f"train.run_dir={tmp_path}", "data.clean_dir=/nonexistent",
                 "data.noise_dir=/nonexistent"]) == 2
    assert "/nonexistent: audio folder not found" in capsys.readouterr().err


def test_ddp_two_gloo_processes_equal_one_process(tiny_config, tmp_path):
    from dataclasses import replace

    steps = 6
    single = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "one"), max_steps=steps))
    r1 = train(single)
    d = tiny_config.data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xmodal.train",
           str(TINY), f"train.run_dir={tmp_path / 'two'}", f"train.max_steps={steps}",
           f"data.clean_dir=[{d.clean_dir[0]}]", f"data.noise_dir=[{d.noise_dir[0]}]",
           f"data.valid_fraction={d.valid_fraction}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    # Same global batch -> same averaged gradient up to float summation order (one process with 2 threads vs two
    # processes with one each), so the same weights step after step: measured within 1e-3 lr after 6 steps (Adam
    # can move a weight whose gradient nearly cancels by a part of lr, hence the bound). Ranks that did not average
    # their gradients, or a loss that did not split over the batch, differ by a large part of lr almost everywhere.
    lr = tiny_config.optim.lr
    diffs = torch.cat([(w2[k] - w1[k]).abs().flatten() for k in w1])
    assert diffs.max() < 0.05 * lr
    assert diffs.mean() < 1e-4 * lr
    # metrics were reduced over both ranks: the same means as one process over all clips
    report = json.loads((tmp_path / "two" / "validation.json").read_text())["report"]
    for metric, value in r1.validation["noisy"].items():
        assert report["noisy"][metric] == pytest.approx(value, abs=1e-6)
    assert report["enhanced"]["si_sdr"] == pytest.approx(r1.validation["enhanced"]["si_sdr"], abs=1e-2)
    # the logged loss is the whole batch's (averaged over ranks), as one process logs it; "done" is said once

    def logged(run):
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["kind"] == "train"]

    one, two = logged(tmp_path / "one"), logged(tmp_path / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-3)
    assert proc.stdout.count("done: ") == 1


def test_checkpoint_errors(tmp_path, tiny_config):
    from xmodal.models import build_model
    from xmodal.modalities import modality_io

    from dataclasses import replace

    model = build_model(tiny_config.model, {"speech": modality_io("speech", tiny_config)})
    ckpt.save_weights(model, tmp_path / "m.safetensors", tiny_config)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    other = build_model(replace(tiny_config.model, widths=(8, 16, 32)), {"speech": modality_io("speech", tiny_config)})
    with pytest.raises(ckpt.CheckpointError, match=r"m.safetensors: weights do not match the model \(missing "
                                                   r"trunk\.dec\.1\.0\.conv1\.bias.*shape mismatch "
                                                   r"trunk\.mid\.0\.conv1\.bias \(16,\) vs \(32,\)"):
        ckpt.load_weights(other, tmp_path / "m.safetensors")
    narrow = build_model(replace(tiny_config.model, widths=(4, 16)), {"speech": modality_io("speech", tiny_config)})
    with pytest.raises(ckpt.CheckpointError, match=r"shape mismatch"):
        ckpt.load_weights(narrow, tmp_path / "m.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match=r"bad.safetensors: not a readable safetensors file"):
        ckpt.load_weights(model, tmp_path / "bad.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=r"nope.safetensors: weights file not found"):
        ckpt.load_weights(model, tmp_path / "nope.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=r"not a run directory \(no config.yaml\)"):
        ckpt.load_run(tmp_path)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match=r"plain.safetensors: no xmodal config in the metadata"):
        ckpt.load_run(tmp_path / "plain.safetensors")
    (tmp_path / "state.pt").write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match=r"state.pt: cannot load the train state"):
        ckpt.load_train_state(tmp_path / "state.pt")


def test_unwrap_removes_wrappers():
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    assert ckpt.unwrap(Wrapper(Wrapper(inner))) is inner


@pytest.mark.parametrize("every_step, precision", [(True, "fp32"), (False, "fp32"), (True, "bf16")],
                         ids=["read-each-step", "deferred-as-on-cuda", "bf16"])
def test_non_finite_loss_stops_naming_its_step_and_saves_no_nan(tiny_config, monkeypatch, every_step, precision):
    """A NaN loss at step 3 stops the run with the step named, whether losses are read every step (CPU) or in one
    go at log/save steps (CUDA); the checkpoint on disk stays the finite one of step 2."""
    import xmodal.train as xtrain

    real_make_loss = xtrain.make_loss

    def make_loss(modality, config):
        fn, calls = real_make_loss(modality, config), []

        def loss(*args):
            value, terms = fn(*args)
            calls.append(1)
            return (value * float("nan") if len(calls) == 3 else value), terms
        return loss

    monkeypatch.setattr(xtrain, "make_loss", make_loss)
    monkeypatch.setattr(xtrain, "_READ_LOSS_EVERY_STEP_ON_CPU", every_step)
    from dataclasses import replace

    hint = " or use train.precision=fp32" if precision == "bf16" else ""  # fp32 already: no precision hint
    with pytest.raises(FloatingPointError, match=rf"non-finite loss nan at step 3; lower optim.lr \(now 0.002\)"
                                                 rf"{hint}$"):
        train(replace(tiny_config, train=replace(tiny_config.train, precision=precision)))  # max_steps 4, save 2
    run = Path(tiny_config.train.run_dir)
    assert ckpt.load_train_state(run / ckpt.STATE)["step"] == 2
    assert all(torch.isfinite(w).all() for w in weights(run).values())


def _interrupting_scheduler(monkeypatch, at_call, how):
    """Make the LR scheduler's ``at_call``-th step (call 1 is at construction; call k + 1 is in training step k, after
    the optimizer has updated the weights) interrupt: ``how`` is ``"signal"`` (a real SIGINT, as Ctrl-C sends) or
    ``"raise"`` (a KeyboardInterrupt raised there, as a second Ctrl-C would)."""

    real, calls = torch.optim.lr_scheduler.LambdaLR.step, []

    def step(self, *a, **k):
        calls.append(1)
        if len(calls) == at_call:
            if how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "step", step)


def _assert_same_weights(run_a, run_b):
    wa, wb = weights(run_a), weights(run_b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture
def python_sigint():
    """SIGINT handled as an interactive Python handles it (KeyboardInterrupt): a background job, as CI may run the
    tests, starts with SIGINT ignored, and training leaves an ignored SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_inside_a_step_saves_a_checkpoint_that_resumes_exactly(tiny_config, tmp_path, monkeypatch, capsys,
                                                                      python_sigint):
    """Ctrl-C landing after the optimizer's update of step 4 (before the step is counted): the step is finished and
    saved as step 4, and resuming gives the uninterrupted run bit for bit; the SIGINT handler is given back."""
    from dataclasses import replace

    full = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "a"), max_steps=6,
                                              save_every=100))
    cut = replace(full, train=replace(full.train, run_dir=str(tmp_path / "b")))
    a = train(full)
    handler = signal.getsignal(signal.SIGINT)
    _interrupting_scheduler(monkeypatch, at_call=5, how="signal")
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    assert signal.getsignal(signal.SIGINT) is handler
    assert "interrupted at step 4; checkpoint saved, run the same command to resume" in capsys.readouterr().out
    assert ckpt.load_train_state(tmp_path / "b" / ckpt.STATE)["step"] == 4
    monkeypatch.undo()
    b = train(cut)
    assert b.resumed_from == 4 and b.step == 6
    assert b.losses == a.losses[4:]
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_keyboard_interrupt_inside_the_update_keeps_the_last_checkpoint(tiny_config, tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt raised between the optimizer's update and the step count (a second Ctrl-C) saves nothing:
    the checkpoint of step 2 stays, and resuming from it gives the uninterrupted run."""
    from dataclasses import replace

    full = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "a"), max_steps=6))
    cut = replace(full, train=replace(full.train, run_dir=str(tmp_path / "b")))
    train(full)
    _interrupting_scheduler(monkeypatch, at_call=4, how="raise")  # in step 3; save_every 2
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    out = capsys.readouterr().out
    assert "interrupted during step 3, in the middle of the weight update: not saved; the checkpoint on disk is " \
           "kept" in out
    assert ckpt.load_train_state(tmp_path / "b" / ckpt.STATE)["step"] == 2
    monkeypatch.undo()
    assert train(cut).resumed_from == 2
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_second_ctrl_c_while_waiting_raises_at_once(python_sigint):
    from xmodal.train import TrainingStopped, _Stop

    before = signal.getsignal(signal.SIGINT)
    with _Stop() as stop:
        assert signal.getsignal(signal.SIGINT) == stop._handle
        os.kill(os.getpid(), signal.SIGINT)  # recorded only
        assert stop.requested == signal.SIGINT
        stop.hold = True
        os.kill(os.getpid(), signal.SIGINT)  # while a checkpoint is written: recorded only
        stop.hold = False
        with pytest.raises(TrainingStopped) as e:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs at the next bytecode
                pass
        assert e.value.signum == signal.SIGINT and isinstance(e.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is before


def test_signal_copies_within_the_grace_period_are_one_request(python_sigint):
    """Under torchrun a worker gets the terminal's Ctrl-C and torchrun's copy of it: one request, not two."""
    from xmodal.train import TrainingStopped, _Stop

    with _Stop(grace=0.3) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == signal.SIGINT
        time.sleep(0.35)
        with pytest.raises(TrainingStopped):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass


def _nan_weights_at_update(monkeypatch, at_call):
    """Make AdamW's ``at_call``-th update leave NaN in the first weight (the loss, computed before, stays finite)."""
    real, calls = torch.optim.AdamW.step, []

    def step(self, *a, **k):
        out = real(self, *a, **k)
        calls.append(1)
        if len(calls) == at_call:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_non_finite_weights_are_not_saved(tiny_config, monkeypatch):
    """An update that leaves NaN weights at the last step: the run stops naming the step and optim.lr, and the
    checkpoint of step 2 stays on disk; the SIGINT handler, thread count and global RNG are given back."""

    _nan_weights_at_update(monkeypatch, 4)
    handler, rng = signal.getsignal(signal.SIGINT), torch.random.get_rng_state()
    with pytest.raises(FloatingPointError, match=r"non-finite weights after step 4 \(.+\); lower optim.lr \(now "
                                                 r"0.002\). Nothing was saved"):  # fp32 already: no precision hint
        train(tiny_config)  # max_steps 4, save_every 2
    assert signal.getsignal(signal.SIGINT) is handler and torch.equal(torch.random.get_rng_state(), rng)
    run = Path(tiny_config.train.run_dir)
    assert ckpt.load_train_state(run / ckpt.STATE)["step"] == 2
    assert all(torch.isfinite(w).all() for w in weights(run).values())


def test_cli_non_finite_weights_is_an_error_and_saves_nothing(tmp_path, capsys, monkeypatch):
    _nan_weights_at_update(monkeypatch, 1)
    run = tmp_path / "r"
    assert main([str(TINY), f"train.run_dir={run}", "optim.lr=1e30", "train.max_steps=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: non-finite weights after step 1 (") and "lower optim.lr (now 1e+30)" in err
    assert not (run / "model.safetensors").exists() and not (run / ckpt.STATE).exists()


@pytest.mark.parametrize("override, key", [
    ("train.log_every=0", "train.log_every"), ("optim.lr=-1", "optim.lr"), ("optim.lr=nan", "optim.lr"),
    ("optim.lr=1e999", "optim.lr"), ("optim.betas=[0.9,1.5]", "optim.betas[1]"),
    ("data.num_workers=-1", "data.num_workers"), ("audio.sample_rate=0", "audio.sample_rate"),
    ("train.threads=-2", "train.threads"), ("train.save_every=-1", "train.save_every"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
])
def test_cli_out_of_range_values_name_their_key_and_write_nothing(tmp_path, capsys, override, key):
    run = tmp_path / "r"
    assert main([str(TINY), f"train.run_dir={run}", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: override `{override}`: `{key}` must be ") and ", got " in err
    assert "Traceback" not in err and not run.exists()


def test_cli_os_error_names_the_path(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([str(TINY), f"train.run_dir={blocker / 'run'}", "train.max_steps=1"]) == 1
    assert capsys.readouterr().err == f"error: {blocker / 'run'}: Not a directory\n"


def test_train_gives_back_threads_and_rng(tiny_config):
    from dataclasses import replace

    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    rng = torch.random.get_rng_state()
    other = 2 if threads != 2 else 1
    train(replace(tiny_config, train=replace(tiny_config.train, threads=other, max_steps=1, seed=7)))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_whole(tiny_config, tmp_path, monkeypatch, capsys):
    """Weights and train state are written before either replaces its file: a save that fails on a full disk (torch
    reports it as a RuntimeError) leaves the previous pair as it was, and the command says so in one line."""
    from dataclasses import replace

    import xmodal._fs

    config = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "r"), max_steps=2,
                                                save_every=1))
    train(replace(config, train=replace(config.train, max_steps=1)))
    run = tmp_path / "r"
    before = {name: (run / name).read_bytes() for name in (ckpt.WEIGHTS, ckpt.STATE)}

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 61184 vs 61072")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(xmodal._fs, "_disk_full", lambda path: True)
    d = tiny_config.data
    args = [str(TINY), f"train.run_dir={run}", f"data.clean_dir=[{d.clean_dir[0]}]",
            f"data.noise_dir=[{d.noise_dir[0]}]", "data.valid_fraction=0.25", "train.max_steps=2",
            "train.save_every=1", f"train.batch_size={config.train.batch_size}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / ckpt.STATE}: cannot write the file (no space left on the device: [enforce "
                          "fail at inline_container.cc:672]") and err.endswith("; nothing was written\n")
    assert {name: (run / name).read_bytes() for name in (ckpt.WEIGHTS, ckpt.STATE)} == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp file left


def test_weights_and_state_of_different_steps_are_not_resumed(tiny_config, tmp_path):
    """A checkpoint whose files come from two saves (a kill between their renames) is refused, naming both steps and
    how to go on; older weights without a step are taken as they are."""
    from dataclasses import replace

    config = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "r"), max_steps=4))
    train(config, stop_after=2)
    run = tmp_path / "r"
    model, _ = ckpt.load_run(run)
    ckpt.save_weights(model, run / ckpt.WEIGHTS, config, step=1)  # the weights of another save
    with pytest.raises(ckpt.CheckpointError, match=rf"{re.escape(str(run))}: model.safetensors is from step 1 but "
                                                   r"train_state.pt from step 2 \(a save was cut between its files\); "
                                                   r"the run cannot resume exactly: start over with "
                                                   r"train.resume=false, or from these weights"):
        train(config)
    ckpt.save_weights(model, run / ckpt.WEIGHTS, config)  # no step recorded (an older xmodal's run)
    assert train(config).resumed_from == 2


def test_steps_redone_after_a_kill_are_logged_once(tiny_config, tmp_path):
    """A run killed after its last checkpoint logged steps it will redo: resuming drops them (and a half-written
    line) from metrics.jsonl, so every step is there once."""
    from dataclasses import replace

    config = replace(tiny_config, train=replace(tiny_config.train, run_dir=str(tmp_path / "r"), max_steps=5,
                                                log_every=1, save_every=0))
    train(config, stop_after=2)
    jsonl = tmp_path / "r" / "metrics.jsonl"
    with open(jsonl, "a", encoding="utf-8") as f:  # what a killed run had logged past its checkpoint at step 2
        f.write(json.dumps({"step": 3, "kind": "train", "loss": 9.0}) + "\n" + '{"step": 4, "ki')
    train(config)
    steps = [json.loads(line)["step"] for line in jsonl.read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5] and 9.0 not in [json.loads(x).get("loss") for x in jsonl.read_text().splitlines()]


def test_a_closed_console_does_not_stop_training(tiny_config, monkeypatch):
    """Piping the log into `head` closes stdout: training goes on to its last step and checkpoint, log.txt whole."""
    from dataclasses import replace

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    config = replace(tiny_config, train=replace(tiny_config.train, progress=False, log_every=1))
    result = train(config)
    assert result.step == config.train.max_steps
    run = Path(config.train.run_dir)
    assert ckpt.load_train_state(run / ckpt.STATE)["step"] == config.train.max_steps
    assert f"step {config.train.max_steps}/{config.train.max_steps} loss" in (run / "log.txt").read_text()
