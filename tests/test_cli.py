"""What the command-line entry points share: SIGTERM handled as Ctrl-C (temp files removed, a line, 128 + signal)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import xmodal._fs
from xmodal._cli import Interrupted, exit_status, interrupt_name, terminate_as_interrupt


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(100):  # Python runs the handler at the next bytecode
        pass


def test_terminate_as_interrupt_raises_and_gives_the_handler_back(python_sigterm):
    with terminate_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not python_sigterm
        with pytest.raises(Interrupted) as e:
            _deliver(signal.SIGTERM)
    assert isinstance(e.value, KeyboardInterrupt) and e.value.signum == signal.SIGTERM
    assert exit_status(e.value) == 143 and interrupt_name(e.value) == "terminated (SIGTERM)"
    assert exit_status(KeyboardInterrupt()) == 130 and interrupt_name(KeyboardInterrupt()) == "interrupted (Ctrl-C)"
    assert signal.getsignal(signal.SIGTERM) is python_sigterm


def test_an_ignored_sigterm_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            _deliver(signal.SIGTERM)  # ignored: nothing happens
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_inside_the_write_of(monkeypatch, name: str) -> None:
    """SIGTERM after the temp file of ``name`` is written, before its rename: the worst moment."""
    real = xmodal._fs.usual_permissions

    def permissions(tmp):
        if Path(tmp).name.startswith(f".{Path(name).stem}."):
            _deliver(signal.SIGTERM)
        real(tmp)

    monkeypatch.setattr(xmodal._fs, "usual_permissions", permissions)


def test_denoise_sigterm_exits_143_with_nothing_half_written(run_dir, tmp_path, capsys, monkeypatch,
                                                             python_sigterm):
    from xmodal.denoise import main

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        sf.write(tmp_path / "in" / f"{name}.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    _sigterm_inside_the_write_of(monkeypatch, "b.wav")
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(run_dir), "--quiet"]) == 143
    assert capsys.readouterr().err.endswith("terminated (SIGTERM): the files finished so far are written; the one "
                                            "in progress was not\n")
    assert sorted(os.listdir(tmp_path / "out")) == ["a.wav"]  # no temp file of b, no c
    assert signal.getsignal(signal.SIGTERM) is python_sigterm


def test_evaluate_sigterm_exits_143_without_a_half_written_report(tmp_path, capsys, monkeypatch, python_sigterm):
    from xmodal.evaluate import main

    for sub in ("clean", "noisy"):
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / "u.wav", 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32),
                 16000)
    _sigterm_inside_the_write_of(monkeypatch, "scores.json")
    assert main(["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--json",
                 str(tmp_path / "scores.json"), "--quiet"]) == 143
    assert capsys.readouterr().err.endswith("terminated (SIGTERM): no report written (figures finished so far are "
                                            "kept, whole)\n")
    assert sorted(os.listdir(tmp_path)) == ["clean", "noisy"]


def test_export_sigterm_exits_143_without_a_half_written_file(run_dir, tmp_path, capsys, monkeypatch,
                                                              python_sigterm):
    from xmodal.export import main

    _sigterm_inside_the_write_of(monkeypatch, "m.onnx")
    assert main([str(run_dir), "-o", str(tmp_path / "m.onnx")]) == 143
    assert capsys.readouterr().err.endswith("terminated (SIGTERM): no file left half-written\n")
    assert os.listdir(tmp_path) == []


def test_commands_print_warnings_as_one_line_and_give_the_format_back():
    """Inside a command a warning prints as ``warning: <message>`` (its category named unless a UserWarning), not as
    Python's file, line and source; the formatter is the caller's again afterwards, also after an error."""
    import warnings

    from xmodal._cli import run_command

    before = warnings.formatwarning
    seen = []

    def command(argv):
        seen.append(warnings.formatwarning(UserWarning("too little calibration data"), UserWarning, "x.py", 3))
        seen.append(warnings.formatwarning(RuntimeWarning("overflow"), RuntimeWarning, "x.py", 4, "y = x * 2"))
        if argv:
            raise ValueError("boom")
        return 0

    assert run_command(command, [], "stopped") == 0
    assert seen == ["warning: too little calibration data\n", "warning (RuntimeWarning): overflow\n"]
    assert warnings.formatwarning is before
    with pytest.raises(ValueError, match="boom"):
        run_command(command, ["fail"], "stopped")
    assert warnings.formatwarning is before
