import platform
import sys

import xmodal
from xmodal import runtime


def test_keep_freed_memory_applies_on_glibc_and_is_idempotent():
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert xmodal.keep_freed_memory() is expected
    assert xmodal.keep_freed_memory() is expected


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_freed_memory() is False


def test_keep_freed_memory_without_a_loadable_libc(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("libc.so.6: cannot open shared object file")

    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setattr(runtime.ctypes, "CDLL", fail)
    assert runtime.keep_freed_memory() is False


def test_keep_freed_memory_reports_a_refused_setting(monkeypatch):
    class Libc:  # a glibc whose mallopt refuses the value (returns 0)
        def mallopt(self, param, value):
            return 0 if param == runtime._M_MMAP_THRESHOLD else 1

        def gnu_get_libc_version(self):
            return b"2.36"

    monkeypatch.setattr(runtime, "_libc", lambda: Libc())
    assert runtime.keep_freed_memory() is False


def test_keep_freed_memory_off_glibc_libc(monkeypatch):
    class Musl:  # a libc without glibc's entry points: nothing to set
        pass

    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a, **k: Musl())
    assert runtime.keep_freed_memory() is False


def test_command_line_turns_it_on(monkeypatch, tmp_path):
    from xmodal import denoise

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    assert denoise.main([str(tmp_path / "missing.wav"), "-o", str(tmp_path / "out"), "--mix", "2"]) == 2
    assert calls == [1]
