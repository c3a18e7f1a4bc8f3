import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from xmodal import _fs
from xmodal._fs import atomic_write, usual_permissions


def write_text(text):
    return lambda p: Path(p).write_text(text, encoding="utf-8")


def test_regular_file_is_replaced_and_no_temp_is_left(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("old")
    atomic_write(dest, write_text("new"))
    assert dest.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_symlink_stays_and_its_target_gets_the_content(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new" and link.read_text() == "new"
    # the temp file went beside the target and is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "link.json"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["real.json"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "sub" / "made.txt")
    atomic_write(link, write_text("x"))
    assert link.is_symlink() and (tmp_path / "sub" / "made.txt").read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("via_link", [False, True])
def test_fifo_is_written_straight_into(tmp_path, via_link):
    """A FIFO (or a symlink to one) is written into, not replaced by a file, and no temp file is left."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dst = tmp_path / "out" if via_link else fifo
    if via_link:
        dst.symlink_to(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(Path(fifo).read_text()), daemon=True)
    reader.start()
    atomic_write(dst, write_text("through the pipe"))
    reader.join(timeout=10)
    assert got == ["through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and dst.is_symlink() == via_link
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out", "pipe"] if via_link else ["pipe"])


def test_directory_is_an_error_and_nothing_is_left(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match=r"Is a directory: '.*d'"):
        atomic_write(tmp_path / "d", write_text("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not any((tmp_path / "d").iterdir())


def test_failing_writer_leaves_nothing(tmp_path):
    def boom(p):
        Path(p).write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(tmp_path / "x.txt", boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the umask is read from /proc on Linux")
def test_umask_is_read_without_changing_it(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def no_umask(*a):
            raise AssertionError("os.umask called: it changes the umask of every thread")

        monkeypatch.setattr(os, "umask", no_umask)
        assert _fs._umask() == 0o027
        dest = tmp_path / "f.txt"
        atomic_write(dest, write_text("x"))
        assert stat.S_IMODE(dest.stat().st_mode) == 0o640
        (tmp_path / "d").mkdir(mode=0o700)
        usual_permissions(tmp_path / "d")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
        monkeypatch.undo()
    finally:
        os.umask(old)


def test_umask_falls_back_to_the_value_at_import(monkeypatch):
    monkeypatch.setattr(_fs, "_umask_from_proc", lambda: None)
    monkeypatch.setattr(_fs, "_UMASK_AT_IMPORT", 0o077)
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called"))
    assert _fs._umask() == 0o077


def test_write_errors_name_the_destination_and_say_why(tmp_path, monkeypatch):
    """A library's bare write error (numpy's "N requested and M written" on a full disk), a folder where no file can
    be made and an error that already names the file: the first two name the destination, say why in words and that
    nothing was written (a full disk as such, with ENOSPC); the third passes unchanged."""
    dest = tmp_path / "out.npy"

    def short(tmp):
        Path(tmp).write_bytes(b"partial")
        raise OSError("90000 requested and 51168 written")

    monkeypatch.setattr(_fs.shutil, "disk_usage", lambda p: type("U", (), {"free": 4096})())
    with pytest.raises(OSError) as e:
        atomic_write(dest, short)
    assert str(e.value) == (f"{dest}: cannot write the file (no space left on the device: 90000 requested and 51168 "
                            "written); nothing was written")
    assert e.value.errno == 28 and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(_fs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1 << 30})())
    with pytest.raises(OSError, match=r"out.npy: cannot write the file \(90000 requested and 51168 written\); "):
        atomic_write(dest, short)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / ".out.abc.npy.part.npy"))

    monkeypatch.setattr(_fs.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as e:
        atomic_write(dest, short)
    assert str(e.value) == f"{dest}: cannot write the file (Read-only file system); nothing was written"
    assert e.value.errno == 30
    monkeypatch.undo()
    named = OSError(f"{dest}: no space left on the device (libsndfile); nothing was written")
    with pytest.raises(OSError) as e:
        atomic_write(dest, lambda tmp: (_ for _ in ()).throw(named))
    assert e.value is named and list(tmp_path.iterdir()) == []
