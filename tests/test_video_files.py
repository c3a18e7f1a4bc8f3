"""Video files beyond the pixels: soundtracks (copied, re-encoded, denoised or dropped, in sync with the frames),
variable frame rates, bit depths above 8 and colour tags (BT.709, full range, HDR10).

Sources are tiny synthetic videos made here with PyAV. For sync: a gray FFV1 picture that flashes white on one frame,
and a silent soundtrack with a click at the same instant; sync is checked by finding the click in the output's audio
and the flash in its frames.
"""

from __future__ import annotations

import os
import re
import warnings
from fractions import Fraction
from pathlib import Path

import av  # a [dev] dependency: a missing install fails, it does not skip
import numpy as np
import pytest
import torch

from xmodal.checkpoint import save_weights
from xmodal.config import dump_config, load_config
from xmodal.denoise import Denoiser, load, main
from xmodal.modalities import modality_io
from xmodal.models import build_model
from xmodal.videoio import ClipInfo, ClipReader, ClipWriter, read_clip, remux_with_source, write_clip

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
FLASH = 8  # the white frame
SIZE = 32


def make_run(folder: Path, recipe: str, overrides: list[str]) -> Path:
    cfg = load_config(ROOT / "recipes" / recipe, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_weights(build_model(cfg.model, {cfg.modality: modality_io(cfg.modality, cfg)}), folder / "model.safetensors",
                 cfg)
    dump_config(cfg, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soundtrack_runs")
    return {"video": make_run(root / "video", "tiny_video.yaml", []),
            "speech": make_run(root / "speech", "tiny.yaml", [])}


def click_track(rate: int, seconds: float, click: float, channels: int = 2) -> np.ndarray:
    """``(C, T)`` float32: faint noise with a loud 2 ms click at ``click`` seconds."""
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.003, (channels, int(rate * seconds))).astype(np.float32)
    a = int(round(click * rate))
    wave[:, a:a + int(rate * 0.002)] = 0.8
    return wave


def make_video(path: Path, *, frames: int = 20, times: list[float] | None = None, video_start: float = 0.0,
               audio_codec: str | None = "flac", rate: int = 48000, audio_start: float = 0.0,
               tracks: int = 1, subtitles: bool = False) -> float:
    """A gray FFV1 (.mkv) or H.264 (.mp4) video whose frame ``FLASH`` is white, with ``tracks`` soundtracks clicking
    at that frame's time (and with ``subtitles`` a SubRip stream showing "flash" from then on); frame ``t`` at
    ``video_start + times[t]`` (``t / FPS`` by default), audio from ``audio_start``. Returns the flash time relative
    to the first frame."""
    times = times if times is not None else [t / FPS for t in range(frames)]
    tb = Fraction(1, 90000)
    flash = times[FLASH]
    sub_in = sub = None
    if subtitles:
        srt = path.parent / "subtitles" / "subtitles.srt"
        srt.parent.mkdir()
        stamp = (lambda x: f"00:00:{int(x):02d},{round(x % 1 * 1000):03d}")  # SubRip's hh:mm:ss,mmm
        srt.write_text(f"1\n{stamp(video_start + flash)} --> {stamp(video_start + flash + 0.3)}\nflash\n")
        sub_in = av.open(str(srt))
    with av.open(str(path), "w") as out:
        sub = out.add_stream_from_template(sub_in.streams.subtitles[0]) if subtitles else None
        v = out.add_stream("ffv1" if path.suffix == ".mkv" else "libx264", rate=FPS)
        v.width = v.height = SIZE
        v.pix_fmt = "gray" if path.suffix == ".mkv" else "yuv420p"
        v.codec_context.time_base = tb
        streams = [out.add_stream(audio_codec, rate=rate, layout="stereo") for _ in range(tracks if audio_codec else 0)]
        for t, when in enumerate(times):
            image = np.full((SIZE, SIZE), 255 if t == FLASH else 40, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="gray")
            frame.pts, frame.time_base = round((video_start + when) / tb), tb
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        for s in streams:
            wave = click_track(rate, times[-1] + 0.2 + video_start - audio_start, video_start + flash - audio_start)
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, round(audio_start * rate), Fraction(1, rate)
            for packet in s.encode(frame):
                out.mux(packet)
            for packet in s.encode():
                out.mux(packet)
        for packet in sub_in.demux() if sub_in is not None else ():
            if packet.pts is not None:
                packet.stream = sub
                out.mux(packet)
    if sub_in is not None:
        sub_in.close()
    return flash


def subtitle_packets(path: Path) -> list[tuple[str, float, bytes]]:
    """``(codec, start, text)`` of each subtitle packet, ``start`` in seconds from the first frame."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        return [(p.stream.codec_context.name, float(p.pts * p.time_base) - v0, bytes(p))
                for p in (c.demux(*c.streams.subtitles) if c.streams.subtitles else ())  # no streams: all of them
                if p.pts is not None and p.size]


def soundtracks(path: Path) -> list[tuple[str, np.ndarray, int, float]]:
    """``(codec, wave (C, T), rate, start)`` of each audio stream, ``start`` in seconds from the first frame."""
    found = []
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        for s in c.streams.audio:
            with av.open(str(path)) as r:
                frames = list(r.decode(r.streams[s.index]))
            start = float(frames[0].pts * frames[0].time_base) - v0
            wave = np.concatenate([f.to_ndarray().astype(np.float32) for f in frames], axis=1)
            if wave.dtype == np.int16 or np.abs(wave).max() > 2:
                wave = wave / 32768
            if frames[0].format.is_packed:  # interleaved samples -> (C, T)
                wave = wave.reshape(-1, s.codec_context.channels).T
            found.append((s.codec_context.name, wave, int(s.codec_context.rate), start))
    return found


def click_time(track: tuple[str, np.ndarray, int, float]) -> float:
    _, wave, rate, start = track
    return start + int(np.argmax(np.abs(wave).max(axis=0) > 0.2)) / rate


def flash_time(path: Path) -> float:
    clip, info = read_clip(path)
    t = int(np.argmax(clip.mean(axis=(1, 2, 3))))
    return info.times[t] if info.times else t / info.fps


def denoise_clip(src: Path, dst: Path, process=None, **kwargs) -> Path:
    """``src``'s frames (unchanged) into ``dst`` through ClipWriter, with its soundtrack."""
    reader = ClipReader(src)
    with ClipWriter(dst, reader.info, reader.info.shape, source=src, audio=process or "copy", **kwargs) as w:
        for t in range(len(reader)):
            w.write(t, reader[t])
    reader.close()
    return dst


# one sample of AAC/Opus encoder delay is not the point; a frame (40 ms) would be
SYNC = 0.003


@pytest.mark.parametrize("src_ext, audio_codec, dst_ext, codec_back", [
    (".mkv", "flac", ".mkv", "flac"),  # copied
    (".mkv", "flac", ".mp4", "flac"),  # copied (MP4 holds FLAC)
    (".mkv", "flac", ".webm", "opus"),  # WebM holds Opus or Vorbis only: re-encoded
    (".mkv", "flac", ".mov", "aac"),  # FFmpeg lists FLAC for MOV but will not write it: re-encoded
    (".mp4", "aac", ".mkv", "aac"),  # copied
    (".mkv", "pcm_s16le", ".avi", "pcm_s16le"),  # copied
])
def test_soundtrack_is_copied_in_sync(tmp_path: Path, src_ext: str, audio_codec: str, dst_ext: str,
                                      codec_back: str) -> None:
    src = tmp_path / f"src{src_ext}"
    flash = make_video(src, audio_codec=audio_codec, rate=44100 if audio_codec == "aac" else 48000)
    assert ClipReader(src).info.audio == (audio_codec,)
    dst = denoise_clip(src, tmp_path / f"out{dst_ext}")
    (track,) = soundtracks(dst)
    assert track[0] == codec_back
    assert abs(click_time(track) - flash) < SYNC
    assert abs(flash_time(dst) - flash) < 1e-6 and len(read_clip(dst)[0]) == 20
    if codec_back == audio_codec == "flac":  # copied packet for packet: the very same samples
        assert np.array_equal(track[1], soundtracks(src)[0][1])
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, dst.name])  # no temporary file left
    assert dst.stat().st_mode & 0o777 == src.stat().st_mode & 0o777  # not mkstemp's 0600


@pytest.mark.parametrize("dst_ext, codec_back", [(".mkv", "flac"), (".mp4", "aac"), (".webm", "opus"),
                                                 (".avi", "pcm_s16le")])
def test_soundtrack_is_processed_in_sync(tmp_path: Path, dst_ext: str, codec_back: str) -> None:
    src = tmp_path / "src.mkv"
    flash = make_video(src, rate=16000)
    seen = []

    def halve(wave: np.ndarray, rate: int) -> np.ndarray:
        seen.append((wave.shape, wave.dtype, rate))
        return wave * 0.5

    dst = denoise_clip(src, tmp_path / f"out{dst_ext}", halve)
    (track,) = soundtracks(dst)
    (source,) = soundtracks(src)
    assert seen == [((2, source[1].shape[1]), np.float32, 16000)]  # the whole track, once, at its own rate
    assert track[0] == codec_back
    assert abs(click_time(track) - flash) < SYNC
    ratio = np.sqrt(np.mean(np.square(track[1])) / np.mean(np.square(source[1])))
    assert ratio == pytest.approx(0.5, abs=0.03)  # at half the level
    if codec_back in ("flac", "pcm_s16le"):  # lossless 16 bits: the processed samples themselves
        assert track[2] == 16000 and np.abs(track[1] - source[1] * 0.5).max() <= 1 / 32768 + 1e-7


@pytest.mark.parametrize("dst_ext, codec_back", [(".mkv", "flac"), (".avi", "pcm_s24le")])
def test_soundtrack_of_24_bits_is_written_at_24_bits(tmp_path: Path, dst_ext: str, codec_back: str) -> None:
    from xmodal.io import AvAudioSource

    src = tmp_path / "src.mkv"  # a camera's 24-bit PCM soundtrack
    make_video(src, audio_codec="pcm_s24le", rate=16000)
    source = AvAudioSource(src)
    assert (source.codec, source.bits) == ("pcm_s24le", 24)
    out = AvAudioSource(denoise_clip(src, tmp_path / f"out{dst_ext}", lambda w, r: w * 0.5))
    assert (out.codec, out.bits) == (codec_back, 24)
    y, x = out.whole(), source.whole()
    assert y.shape == x.shape and np.abs(y - x * 0.5).max() <= 1.01 / 2 ** 23  # 16 bits would be 256 times off


def test_offsets_between_picture_and_sound_are_kept(tmp_path: Path) -> None:
    # the picture starts at 0.5 s in the source and the sound at 0.2 s: the sound starts 0.3 s before the first frame
    src = tmp_path / "src.mkv"
    flash = make_video(src, video_start=0.5, audio_start=0.2)
    for dst, process in [(tmp_path / "copy.mkv", None), (tmp_path / "half.mp4", lambda w, r: w * 0.5)]:
        (track,) = soundtracks(denoise_clip(src, dst, process))
        assert abs(click_time(track) - flash) < SYNC
    # the sound starting after the picture: a delay (AAC adds its encoder delay before the first sample)
    late = tmp_path / "late.mkv"
    flash = make_video(late, audio_start=0.1)
    for ext in (".mkv", ".mp4"):
        (track,) = soundtracks(denoise_clip(late, tmp_path / f"late_out{ext}", lambda w, r: w))
        assert abs(click_time(track) - flash) < SYNC
        if ext == ".mkv":
            assert abs(track[3] - 0.1) < 1e-3


def video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


@pytest.mark.parametrize("src_ext, audio_codec, video_start, audio_start, process", [
    (".mkv", "flac", 0.0, 0.1, None),  # the sound starts 0.1 s after the picture (AVI would take the FLAC packets)
    (".mkv", "flac", 0.0, 0.1, "halve"),  # the same, processed
    (".mp4", "aac", 0.0, 0.0, None),  # AAC's encoder priming: its first packet is at -1024 samples
    (".mkv", "pcm_s16le", 0.5, 0.2, None),  # the sound starts 0.3 s before the picture, in a codec AVI takes
])
def test_avi_keeps_offsets_between_picture_and_sound(tmp_path: Path, src_ext: str, audio_codec: str,
                                                     video_start: float, audio_start: float, process) -> None:
    # AVI has no start time per stream: the offset must survive in the samples, and the frames stay 0, 1, 2...
    src = tmp_path / f"src{src_ext}"
    flash = make_video(src, audio_codec=audio_codec, rate=44100 if audio_codec == "aac" else 48000,
                       video_start=video_start, audio_start=audio_start)
    dst = denoise_clip(src, tmp_path / "out.avi", (lambda w, r: w * 0.5) if process else None)
    assert video_pts(dst) == list(range(20))
    assert abs(flash_time(dst) - flash) < 1e-6
    (track,) = soundtracks(dst)
    assert track[0] == "pcm_s16le" and abs(track[3]) < 1e-6  # re-encoded to start with the first frame
    assert abs(click_time(track) - flash) < SYNC  # was 100 ms early (late start), 40 ms of picture lost (AAC)
    if audio_start > video_start:  # silence before the sound's first sample
        assert np.abs(track[1][:, :round(0.1 * track[2]) - 1]).max() == 0
    # (a soundtrack that starts with the picture is copied packet for packet: test_soundtrack_is_copied_in_sync)


def test_avi_refuses_a_copied_packet_before_the_first_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what a copied stream that starts before the picture (XSUB subtitles, say) would meet: FFmpeg's AVI muxer would
    # move every stream, the video too, to fit it; refused, nothing written
    import xmodal.videoio as videoio

    src = tmp_path / "src.mkv"
    make_video(src, audio_codec="pcm_s16le", video_start=0.5, audio_start=0.2)
    monkeypatch.setattr(videoio, "_starts_at", lambda *args: True)  # taken for a stream that starts with the picture
    with pytest.raises(ValueError, match=r"src.mkv: stream 1 \(pcm_s16le\) has a packet at -0.300 s, before the first "
                                         r"frame, which a .avi file cannot hold \(every stream starts with the "
                                         r"picture\); write .mkv or .mp4"):
        denoise_clip(src, tmp_path / "out.avi")
    assert os.listdir(tmp_path) == ["src.mkv"]


def test_several_soundtracks_are_all_kept(tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    flash = make_video(src, tracks=2)
    assert ClipReader(src).info.audio == ("flac", "flac")
    tracks = soundtracks(denoise_clip(src, tmp_path / "out.webm"))
    assert [t[0] for t in tracks] == ["opus", "opus"]
    assert all(abs(click_time(t) - flash) < SYNC for t in tracks)


def test_subtitles_are_copied_in_sync_or_left_out_with_a_warning(tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    flash = make_video(src, video_start=0.3, subtitles=True)
    ((codec, start, text),) = subtitle_packets(src)
    assert (codec, text) == ("srt", b"flash") and abs(start - flash) < 1e-3
    ((codec, start, text),) = subtitle_packets(denoise_clip(src, tmp_path / "out.mkv"))
    assert (codec, text) == ("srt", b"flash") and abs(start - flash) < 1e-3  # shown with the same frame
    assert abs(click_time(soundtracks(tmp_path / "out.mkv")[0]) - flash) < SYNC
    with pytest.warns(UserWarning, match=r"src\.mkv: subtitle stream 0 \(srt\) cannot be stored in a \.mp4 file "
                                         r"and is left out \(write \.mkv to keep it\)"):
        out = denoise_clip(src, tmp_path / "out.mp4")
    assert subtitle_packets(out) == [] and len(soundtracks(out)) == 1


def test_variable_frame_rate_is_kept(tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.08, 0.15, 0.19, 0.30, 0.34, 0.41, 0.50, 0.52, 0.60, 0.71]
    src = tmp_path / "vfr.mkv"
    flash = make_video(src, times=times)
    info = ClipReader(src).info
    assert info.times == pytest.approx(times, abs=1e-3)  # Matroska keeps milliseconds
    for ext in (".mkv", ".mp4"):
        dst = denoise_clip(src, tmp_path / f"out{ext}")
        assert ClipReader(dst).info.times == pytest.approx(times, abs=1e-3)
        assert abs(flash_time(dst) - flash) < 1e-3 and abs(click_time(soundtracks(dst)[0]) - flash) < SYNC
    # AVI has no variable rate: evenly spaced frames at the average rate
    dst = denoise_clip(src, tmp_path / "out.avi")
    assert ClipReader(dst).info.times == ()
    # a constant rate reads as (), also 29.97 fps in Matroska's milliseconds (steps of 33 and 34)
    make_video(tmp_path / "cfr.mkv")
    assert ClipReader(tmp_path / "cfr.mkv").info.times == ()
    make_video(tmp_path / "ntsc.mkv", times=[t * 1001 / 30000 for t in range(20)])
    assert ClipReader(tmp_path / "ntsc.mkv").info.times == ()


def test_audio_errors_leave_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    make_video(src)
    with pytest.raises(ValueError, match=r"src.mkv: denoising audio stream 1 of shape \(2, \d+\) gave shape \(2, 5\)"):
        denoise_clip(src, tmp_path / "out.mkv", lambda w, r: w[:, :5])
    with pytest.raises(ValueError, match=r"src.mkv: denoising audio stream 1 gave NaN or infinite samples"):
        denoise_clip(src, tmp_path / "out.mkv", lambda w, r: w * np.nan)
    assert os.listdir(tmp_path) == ["src.mkv"]
    with pytest.raises(ValueError, match=r"out.npy: only a video file \(.mp4, .mov, .mkv, .avi, .webm\) can take "
                                         r"the audio and tags of .*src.mkv"):
        ClipWriter(tmp_path / "out.npy", None, (2, 1, 8, 8), source=src)
    with pytest.raises(ValueError, match=r"`audio` must be 'copy', 'drop', a StreamedAudio or a function \(wave, "
                                         r"sample_rate\) -> wave, got 'mute'"):
        ClipWriter(tmp_path / "out.mkv", None, (2, 1, 8, 8), source=src, audio="mute")
    assert os.listdir(tmp_path) == ["src.mkv"]


def test_undecodable_soundtrack_is_reported_and_nothing_written(runs: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.io

    src = tmp_path / "src.mkv"
    make_video(src)
    real, readings, failing = xmodal.io._and_flush, [], set()

    def damaged(frames):  # what a damaged audio stream gives PyAV, a frame in, on the readings in `failing`
        readings.append(1)
        if len(readings) not in failing:
            yield from real(frames)
            return
        yield next(frames)
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(xmodal.io, "_and_flush", damaged)
    den, speech = load(runs["video"]), load(runs["speech"])
    # a function takes the track whole: its one reading; the denoiser reads it twice: the level (before the video is
    # muxed), then the denoising (while it is)
    for audio, fail_at in [(lambda w, r: w, 1), (speech, 1), (speech, 2)]:
        readings.clear()
        failing = {fail_at}
        with pytest.raises(ValueError, match=r"src.mkv: audio stream 1: cannot be decoded \(\[Errno 1094995529\] "
                                             r"Invalid data found when processing input\)"):
            den.denoise_file(src, tmp_path / "out.mp4", audio=audio)
        assert len(readings) == fail_at
    assert sorted(os.listdir(tmp_path)) == ["src.mkv"]
    den.denoise_file(src, tmp_path / "copied.mkv")  # copying does not decode: the packets go through as they are
    assert sorted(os.listdir(tmp_path)) == ["copied.mkv", "src.mkv"]


def test_video_denoiser_audio_options(runs: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    make_video(src, rate=16000)
    den, speech = load(runs["video"]), load(runs["speech"])
    assert isinstance(speech, Denoiser)
    frames_only = den.denoise(read_clip(src)[0])
    (source,) = soundtracks(src)
    den.denoise_file(src, tmp_path / "copy.mkv")  # default: copied
    (track,) = soundtracks(tmp_path / "copy.mkv")
    assert np.array_equal(track[1], source[1])
    assert np.abs(read_clip(tmp_path / "copy.mkv")[0] - np.rint(np.clip(frames_only, 0, 1) * 255) / 255).max() \
        <= 1.01 / 255  # the frames are those of denoise()
    den.denoise_file(src, tmp_path / "drop.mkv", audio="drop")
    assert soundtracks(tmp_path / "drop.mkv") == [] and ClipReader(tmp_path / "drop.mkv").info.audio == ()
    den.denoise_file(src, tmp_path / "speech.mkv", audio=speech)
    (track,) = soundtracks(tmp_path / "speech.mkv")
    expected = speech.denoise(source[1], 16000)
    assert np.abs(track[1] - np.clip(expected, -1, 1)).max() <= 1 / 32768 + 1e-6  # FLAC: 16-bit rounding only
    assert abs(track[3]) < 1e-9 and track[1].shape == source[1].shape  # same start and length
    # a folder of frames or a .npy holds no audio: "copy" leaves it out, a denoiser is an error
    den.denoise_file(src, tmp_path / "frames")
    assert len(os.listdir(tmp_path / "frames")) == 20
    with pytest.raises(ValueError, match=r"src.mkv: its soundtrack cannot be denoised into .*clip.npy, a .npy file "
                                         r"\(no audio there\); write a video file"):
        den.denoise_file(src, tmp_path / "clip.npy", audio=speech)
    with pytest.raises(ValueError, match=r"`audio` must be 'copy', 'drop', a speech Denoiser "
                                         r"\(xmodal.load\('speech'\)\) "
                                         r"or a function \(wave, sample_rate\) -> wave, got 'denoise'"):
        den.denoise_file(src, tmp_path / "bad.mkv", audio="denoise")
    assert not (tmp_path / "clip.npy").exists() and not (tmp_path / "bad.mkv").exists()


def test_soundtracks_are_denoised_chunk_by_chunk(runs: dict[str, Path], tmp_path: Path) -> None:
    """A speech denoiser runs over each soundtrack a chunk at a time (two readings of the stream, never the whole of
    it in memory): both tracks of a video come out as ``Denoiser.denoise`` gives them, from the same time."""
    from xmodal.denoise import _audio_process
    from xmodal.videoio import StreamedAudio

    src = tmp_path / "src.mkv"
    make_video(src, frames=40, rate=16000, tracks=2)  # 1.76 s of sound a track: 6 chunks of 0.3 s
    den, speech = load(runs["video"]), load(runs["speech"])
    audio = _audio_process(speech, chunk_seconds=0.3)
    assert isinstance(audio, StreamedAudio)
    den.denoise_file(src, tmp_path / "out.mkv", audio=audio)
    sources, outputs = soundtracks(src), soundtracks(tmp_path / "out.mkv")
    assert len(outputs) == 2
    for (_, wave, rate, start), out in zip(sources, outputs):
        assert (out[0], out[2], out[1].shape) == ("flac", rate, wave.shape) and abs(out[3] - start) < 1e-9
        chunked = np.clip(speech.denoise(wave, rate, chunk_seconds=0.3), -1, 1)
        assert np.abs(out[1] - chunked).max() <= 1 / 32768 + 1e-6  # FLAC: 16-bit rounding only
        whole = np.clip(speech.denoise(wave, rate, chunk_seconds=60.0), -1, 1)
        assert np.abs(out[1] - whole).max() <= 1 / 32768 + 1e-4  # chunks with enough context: the whole signal's


def test_cli_audio_options(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = tmp_path / "in" / "talk.mkv"
    src.parent.mkdir()
    make_video(src, rate=16000)
    args = [str(src), "--model", str(runs["video"]), "--quiet"]
    assert main([*args, "-o", str(tmp_path / "a"), "--audio", "denoise", "--audio-model", str(runs["speech"]),
                 "--mix", "0.5"]) == 0
    (track,) = soundtracks(tmp_path / "a" / "talk.mkv")
    (source,) = soundtracks(src)
    expected = load(runs["speech"]).denoise(source[1], 16000, mix=0.5)
    assert np.abs(track[1] - np.clip(expected, -1, 1)).max() <= 1 / 32768 + 1e-6
    long = tmp_path / "long" / "speech.mkv"
    long.parent.mkdir()
    make_video(long, frames=100, rate=16000)  # 4 s of sound
    (sound,) = soundtracks(long)
    speech = load(runs["speech"])
    chunks = len(speech.chunk_plan(sound[1].shape[1], 16000, chunk_seconds=0.3))
    assert chunks > 1
    capsys.readouterr()
    assert main([str(long), "--model", str(runs["video"]), "-o", str(tmp_path / "e"), "--audio", "denoise",
                 "--audio-model", str(runs["speech"]), "--chunk-seconds", "0.3"]) == 0  # not --quiet: progress bars
    assert f"speech.mkv (sound):   0%|          | 0/{chunks}" in capsys.readouterr().err  # the sound has its own
    (track,) = soundtracks(tmp_path / "e" / "speech.mkv")
    expected = speech.denoise(sound[1], 16000, chunk_seconds=0.3)
    assert np.abs(track[1] - np.clip(expected, -1, 1)).max() <= 1 / 32768 + 1e-6
    assert main([*args, "-o", str(tmp_path / "b"), "--audio", "drop"]) == 0
    assert ClipReader(tmp_path / "b" / "talk.mkv").info.audio == ()
    assert main([*args, "-o", str(tmp_path / "c")]) == 0  # copied by default
    assert np.array_equal(soundtracks(tmp_path / "c" / "talk.mkv")[0][1], source[1])
    # --audio-model must be a speech model
    assert main([*args, "-o", str(tmp_path / "d"), "--audio", "denoise", "--audio-model", str(runs["video"])]) == 2
    assert re.search(r"--audio-model .*video: .*a model of video, not 'speech'", capsys.readouterr().err)
    assert not (tmp_path / "d" / "talk.mkv").exists()


def test_cli_folders_take_video_files_and_sound_only_ones(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A folder given to the command line: with no model chosen, each audio, image and video file is denoised as
    what it is (a video container holding sound only as sound); a speech model takes the sound-only ones too."""
    import soundfile as sf

    folder = tmp_path / "mixed"
    folder.mkdir()
    make_video(folder / "clip.mkv", frames=10, rate=16000)  # a picture and sound
    sf.write(folder / "talk.wav", click_track(16000, 0.5, 0.2, 1).T, 16000)
    with av.open(str(folder / "voice.webm"), "w", format="webm") as out:  # a browser recording: sound only
        s = out.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(click_track(48000, 0.5, 0.2, 1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*s.encode(frame), *s.encode()]:
            out.mux(packet)
    (folder / "notes.txt").write_text("not a medium")
    assert main([str(folder), "-o", str(tmp_path / "auto"), "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "auto")) == ["clip.mkv", "talk.wav", "voice.webm"]
    assert len(read_clip(tmp_path / "auto" / "clip.mkv")[0]) == 10 and soundtracks(tmp_path / "auto" / "clip.mkv")
    assert main([str(folder), "-o", str(tmp_path / "speech"), "--model", str(runs["speech"]), "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "speech")) == ["talk.wav", "voice.webm"]
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "none"), "--quiet"]) == 1
    assert re.search(r"empty: no audio, image or video files \(\.png.*\.wav.*\.webm\) in this folder",
                     capsys.readouterr().err)


@pytest.mark.parametrize("src_ext, dst_ext", [(".mp4", ".mp4"), (".mp4", ".mkv"), (".mkv", ".mov")])
def test_container_tags_are_kept(tmp_path: Path, src_ext: str, dst_ext: str) -> None:
    src = tmp_path / f"holiday{src_ext}"
    make_video(src, audio_codec="aac" if src_ext == ".mp4" else "flac")
    tags = {"title": "Beach, day 2", "creation_time": "2026-07-01T10:00:00.000000Z"}
    with av.open(str(src)) as c, av.open(str(tmp_path / f"tagged{src_ext}"), "w") as out:  # retag by remuxing
        out.metadata.update(tags)
        streams = {s.index: out.add_stream_from_template(s) for s in c.streams}
        for packet in c.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    dst = denoise_clip(tmp_path / f"tagged{src_ext}", tmp_path / f"out{dst_ext}")
    with av.open(str(dst)) as c:
        got = {k.lower(): v for k, v in c.metadata.items()}
    assert got["title"] == tags["title"] and got["creation_time"].startswith("2026-07-01T10:00:00")


def test_write_clip_without_audio_keeps_working(tmp_path: Path) -> None:
    clip = np.zeros((3, 1, 8, 8), np.float32)
    write_clip(tmp_path / "c.mkv", clip, ClipInfo("video", (3, 1, 8, 8), "uint8", fps=10.0))
    info = ClipReader(tmp_path / "c.mkv").info
    assert info.audio == () and info.times == () and info.fps == pytest.approx(10.0)
    with pytest.raises(FileNotFoundError):
        remux_with_source(tmp_path / "missing.mkv", tmp_path / "c.mkv", tmp_path / "x.mkv")


# ------------------------------------------------------------------------------------------- high bit depth video


def deep_clip(T: int, C: int, H: int, W: int) -> np.ndarray:
    """A smooth 16-bit clip (values on the 65535 grid, as read from a uint16 file)."""
    y, x = np.mgrid[0:H, 0:W] / max(H, W)
    frames = [np.stack([(0.2 + 0.6 * (x + t * 0.05 + c * 0.1) % 1.0) * (0.5 + 0.5 * y) for c in range(C)])
              for t in range(T)]
    return (np.rint(np.stack(frames) * 65535) / 65535).astype(np.float32)


@pytest.mark.parametrize("ext, C, pix_fmt, tol", [(".mkv", 1, "gray16le", 0.0), (".mkv", 3, "gbrp16le", 0.0),
                                                  (".avi", 3, "gbrp16le", 0.0), (".mp4", 3, "yuv420p10le", 0.004),
                                                  (".mov", 1, "yuv420p10le", 0.004)])
def test_16_bit_clips_stay_deep_in_video_files(tmp_path: Path, ext: str, C: int, pix_fmt: str, tol: float) -> None:
    clip = deep_clip(4, C, 24, 32)
    write_clip(tmp_path / f"c{ext}", clip, ClipInfo("npy", clip.shape, "uint16", layout="THWC"))
    got, info = read_clip(tmp_path / f"c{ext}")
    with av.open(str(tmp_path / f"c{ext}")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    assert info.dtype == "uint16" and info.shape[0] == 4
    got = got[:, :C] if C == 1 else got
    error = np.abs(got - clip)
    assert error.max() <= 8 * tol + 1e-7 and error.mean() <= tol  # FFV1 exact at 16 bits; 10-bit H.264 close
    if tol:  # better than 8 bits could be: steps finer than 1/255 survive
        assert len(np.unique(np.rint(got * 65535))) > len(np.unique(np.rint(got * 255)))
    # WebM (8-bit VP9) and an 8-bit source stay 8-bit
    with pytest.warns(UserWarning, match=r"c.webm: a uint16 clip is stored at 8 bits"):
        write_clip(tmp_path / "c.webm", clip, ClipInfo("npy", clip.shape, "uint16", layout="THWC"))
    assert read_clip(tmp_path / "c.webm")[1].dtype == "uint8"
    write_clip(tmp_path / "c8.mkv", clip)
    assert read_clip(tmp_path / "c8.mkv")[1].dtype == "uint8"


@pytest.mark.parametrize("units", [1.0, 1000.0])  # [0, 1] data; a clip in its own units (auto-ranged)
@pytest.mark.parametrize("ext, C, pix_fmt, tol", [(".mkv", 1, "gray16le", 0.0), (".mkv", 3, "gbrp16le", 0.0),
                                                  (".mp4", 3, "yuv420p10le", 0.004)])
def test_float_clips_keep_their_range_in_video_files(tmp_path: Path, units: float, ext: str, C: int, pix_fmt: str,
                                                     tol: float) -> None:
    arr = deep_clip(4, C, 24, 32).transpose(0, 2, 3, 1) * np.float32(units)  # (T, H, W, C)
    np.save(tmp_path / "c.npy", arr[..., 0] if C == 1 else arr)
    clip, info = read_clip(tmp_path / "c.npy")
    lo, hi = info.value_range
    if units == 1:
        assert (lo, hi) == (0.0, 1.0)  # looks like [0, 1] data: used as it is
    else:  # the 0.1 and 99.9 percentiles, as the denoiser auto-ranges it: a few values fall outside
        assert clip.min() < lo < hi < clip.max() and np.mean((clip < lo) | (clip > hi)) <= 0.0025
    write_clip(tmp_path / f"c{ext}", clip, info)
    got, back = read_clip(tmp_path / f"c{ext}")
    with av.open(str(tmp_path / f"c{ext}")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    assert back.dtype == "uint16"  # not cut to 8 bits; a clip in other units was all white (every value above 1)
    got = (got[:, :C] if C == 1 else got) * (hi - lo) + lo  # the codes back in the clip's units
    error = np.abs(got - np.clip(clip, lo, hi)) / (hi - lo)
    assert error.max() <= 0.51 / 65535 + 8 * tol and error.mean() <= 0.26 / 65535 + tol  # FFV1: 16-bit rounding


def test_float_clip_range_is_the_denoisers(tmp_path: Path) -> None:
    from xmodal.denoise import _resolve_range, _sample_frames, file_value_range

    rng = np.random.default_rng(0)
    for name, arr in [("units", 200 + 800 * rng.random((12, 20, 24, 3))), ("unit", rng.random((12, 20, 24))),
                      ("flat", np.full((3, 8, 8), 500.0)), ("frames", rng.normal(0, 5, (30, 8, 8)))]:
        np.save(tmp_path / f"{name}.npy", arr.astype(np.float32))
        reader = ClipReader(tmp_path / f"{name}.npy")
        sample = torch.from_numpy(np.stack([reader[int(t)] for t in _sample_frames(len(reader))]))
        lo, span = _resolve_range(sample, file_value_range(sample, "float32"))
        assert reader.info.value_range == pytest.approx((lo, lo + span), rel=1e-12, abs=1e-12), name
    assert ClipReader(tmp_path / "flat.npy").info.value_range == (500.0, 501.0)
    np.save(tmp_path / "u8.npy", np.zeros((2, 8, 8), np.uint8))
    assert ClipReader(tmp_path / "u8.npy").info.value_range == ()  # integer clips: [0, 1] by their dtype


def test_float_clip_to_webm_warns_and_bad_ranges_are_refused(tmp_path: Path) -> None:
    clip = deep_clip(2, 3, 16, 16) * 1000
    info = ClipInfo("npy", clip.shape, "float32", layout="THWC", value_range=(0.0, 1000.0))
    with pytest.warns(UserWarning, match=r"c.webm: a float32 clip is stored at 8 bits in a .webm file \(VP9 here is "
                                         r"8-bit only\), 0..1000 in 255 steps; write .mkv for 16-bit FFV1"):
        write_clip(tmp_path / "c.webm", clip, info)
    got, back = read_clip(tmp_path / "c.webm")
    assert back.dtype == "uint8" and np.abs(got * 1000 - clip).max() <= 3 * 1000 / 255  # 8-bit (and YUV), not white
    deep = np.round(clip / 1000 * 65535).astype(np.uint16)  # a 10-bit or 16-bit source: warned about too
    with pytest.warns(UserWarning, match=r"d.webm: a uint16 clip is stored at 8 bits in a .webm file \(VP9 here is "
                                         r"8-bit only\) \(a 10-bit or HDR source bands in smooth gradients\); "
                                         r"write .mkv for 16-bit FFV1"):
        write_clip(tmp_path / "d.webm", deep, ClipInfo("npy", clip.shape, "uint16", layout="THWC"))
    os.remove(tmp_path / "d.webm")
    for bad in [(5.0, 5.0), (0.0, float("inf")), (1.0,)]:
        with pytest.raises(ValueError, match=r"bad.mkv: `info.value_range` must be \(lo, hi\) with finite lo < hi, "
                                             rf"got {re.escape(repr(bad))}"):
            ClipWriter(tmp_path / "bad.mkv", ClipInfo("npy", clip.shape, "float32", value_range=bad), clip.shape)
    assert sorted(os.listdir(tmp_path)) == ["c.webm"]


def test_cli_writes_a_float_clip_in_its_own_units_as_16_bit_video(runs: dict[str, Path], tmp_path: Path) -> None:
    # what the denoiser writes as .npy (the clip's own units, 0..1000) comes back from --format mkv after rescaling
    rng = np.random.default_rng(0)
    arr = (deep_clip(5, 1, 32, 32)[:, 0] + rng.normal(0, 0.02, (5, 32, 32))) * 1000
    np.save(tmp_path / "pan.npy", arr.astype(np.float32))
    for fmt in ([], ["--format", "mkv"]):
        assert main([str(tmp_path / "pan.npy"), "-o", str(tmp_path / "out"), "--model", str(runs["video"]),
                     "--quiet", *fmt]) == 0
    expected = np.load(tmp_path / "out" / "pan.npy")
    got, info = read_clip(tmp_path / "out" / "pan.mkv")
    lo, hi = ClipReader(tmp_path / "pan.npy").info.value_range  # what the denoiser mapped to [0, 1]
    # only what the (untrained) model put outside that range is at the ends; the clip's units taken for [0, 1]
    # made nearly all of it white
    outside = np.mean((expected <= lo) | (expected >= hi))
    assert abs(np.mean((got == 0) | (got == 1)) - outside) < 0.01
    assert info.dtype == "uint16" and info.codec == "ffv1"
    error = np.abs(got[:, 0] * (hi - lo) + lo - np.clip(expected, lo, hi))
    assert error.max() <= 0.51 * (hi - lo) / 65535
    # a range given on the command line is the one the video file's codes span
    for fmt in ([], ["--format", "mkv"]):
        assert main([str(tmp_path / "pan.npy"), "-o", str(tmp_path / "given"), "--model", str(runs["video"]),
                     "--quiet", "--value-range=-500,2000", *fmt]) == 0
    expected = np.load(tmp_path / "given" / "pan.npy")
    got, _ = read_clip(tmp_path / "given" / "pan.mkv")
    error = np.abs(got[:, 0] * 2500 - 500 - np.clip(expected, -500, 2000))
    assert error.max() <= 0.51 * 2500 / 65535


def test_10_bit_video_is_read_at_16_bits(tmp_path: Path) -> None:
    levels = np.array([0, 1, 2, 512, 1021, 1023], np.uint16)  # 10-bit codes, steps finer than 8 bits
    image = np.repeat(np.repeat(levels[None], 16, axis=0), 4, axis=1)  # (16, 24)
    with av.open(str(tmp_path / "ten.mkv"), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 24, 16, "yuv420p10le"
        frame = av.VideoFrame.from_ndarray(image, format="gray10le")  # the encoder converts it to 10-bit YUV
        for packet in [*s.encode(frame), *s.encode()]:
            out.mux(packet)
    got, info = read_clip(tmp_path / "ten.mkv")
    assert info.dtype == "uint16" and info.shape == (1, 3, 16, 24)
    row = np.rint(got[0, 1, 8, ::4] * 65535)
    assert np.all(np.diff(row) > 0)  # codes 0, 1, 2 stay apart (8 bits would merge them)


# ----------------------------------------------------------------------------------------------------- colour tags


def tagged_source(path: Path, pix_fmt: str, tags: tuple[int, int, int, int] | None) -> None:
    """Three FFV1 frames of a colour ramp coded in ``pix_fmt`` with the matrix and range of ``tags``."""
    y, x = np.mgrid[0:32, 0:48]
    deep = "10" in pix_fmt
    rgb = (np.stack([40 + 3 * x, 60 + 4 * y, 200 - 2 * x - y], -1).clip(0, 255) * (257 if deep else 1))
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=FPS)
        s.width, s.height, s.pix_fmt = 48, 32, pix_fmt
        if tags:
            ctx = s.codec_context
            ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = tags
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint16 if deep else np.uint8),
                                               format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=tags[2] if tags else None,
                                   dst_color_range=tags[3] if tags else None)
            if tags:
                frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = tags
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


def luma_and_tags(path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The first frame's Y plane as coded (no conversion) and the stream's colour tags."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        ctx = stream.codec_context
        frame = next(c.decode(stream))
        plane = frame.planes[0]
        dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
        luma = np.frombuffer(bytes(plane), dtype).reshape(plane.height, -1)[:, :plane.width].astype(int)
        return luma, (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range)


@pytest.mark.parametrize("pix_fmt, tags, tol", [("yuv444p", (1, 1, 1, 1), 3),  # BT.709, limited range
                                                ("yuv444p", (1, 1, 1, 2), 3),  # BT.709, full range (phones)
                                                ("yuv444p10le", (9, 16, 9, 1), 12),  # HDR10: BT.2020, PQ, 10 bits
                                                ("yuv444p", None, 3)])  # untagged stays untagged
def test_colour_tags_and_coding_are_kept(tmp_path: Path, pix_fmt: str, tags, tol: int) -> None:
    src = tmp_path / "src.mkv"
    tagged_source(src, pix_fmt, tags)
    info = ClipReader(src).info
    assert info.color == (tags or ())
    source_luma, source_tags = luma_and_tags(src)
    for ext in (".mp4", ".webm"):  # YUV outputs: the same coded values under the same tags
        deep_into_webm = ext == ".webm" and "10" in pix_fmt
        with pytest.warns(UserWarning, match=r"a uint16 clip is stored at 8 bits") if deep_into_webm else \
                warnings.catch_warnings():
            luma, out_tags = luma_and_tags(denoise_clip(src, tmp_path / f"out{ext}"))
        if tags:
            assert out_tags == tags
        else:
            assert out_tags[:3] == (2, 2, 2)
        if ext == ".mp4" or "10" not in pix_fmt:  # (WebM is 8-bit: 10-bit codes do not compare)
            assert np.abs(luma - source_luma).max() <= tol  # not re-coded with another matrix or range
    if tags:  # RGB FFV1: the source's primaries and transfer (HDR stays HDR)
        assert luma_and_tags(denoise_clip(src, tmp_path / "out.mkv"))[1][:2] == tags[:2]


MASTERING = (0.68, 0.32, 0.265, 0.69, 0.15, 0.06, 0.3127, 0.329, 0.0001, 1000.0)  # P3 primaries, D65, 1000 nits


def test_hdr10_mastering_metadata_is_kept(tmp_path: Path) -> None:
    """HDR10: 10-bit BT.2020/PQ with the mastering display (SMPTE ST 2086) and content light level (MaxCLL, MaxFALL)
    in SEI messages (FFmpeg gives HEVC's the same way; PyAV's libx265 aborts on such small frames, so the source is
    H.264). Read into ClipInfo and written back into .mp4/.mov; containers whose codecs cannot carry them (FFV1, VP9)
    warn."""
    src = tmp_path / "hdr.mp4"
    params = ("mastering-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
              "cll=1000,400")
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p10le"
        ctx = s.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 9, 16, 9, 1
        s.options = {"x264-params": params}
        for t in range(3):
            rgb = np.full((32, 48, 3), 20000 + 5000 * t, np.uint16)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(format="yuv420p10le",
                                                                               dst_colorspace=9)
            frame.pts = t
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    info = ClipReader(src).info
    assert (info.mastering, info.light_level, info.color) == (MASTERING, (1000, 400), (9, 16, 9, 1))
    for ext in (".mp4", ".mov"):
        out_info = ClipReader(denoise_clip(src, tmp_path / f"out{ext}")).info
        assert (out_info.mastering, out_info.light_level, out_info.color, out_info.dtype) == \
            (MASTERING, (1000, 400), (9, 16, 9, 1), "uint16")
    for ext, name in [(".mkv", "ffv1"), (".webm", "libvpx-vp9")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out_info = ClipReader(denoise_clip(src, tmp_path / f"out{ext}")).info
        said = [str(w.message) for w in caught]
        assert sum(bool(re.search(rf"out{ext}: the source's HDR mastering display and content light level cannot be "
                                  rf"stored in a \{ext} file \({name}\) and are left out \(write .mp4 or .mov to "
                                  r"keep them\)", m)) for m in said) == 1
        assert sum("a uint16 clip is stored at 8 bits" in m for m in said) == (ext == ".webm")  # WebM's depth too
        assert (out_info.mastering, out_info.light_level) == ((), ())
    plain = tmp_path / "plain.mp4"
    write_clip(plain, np.zeros((2, 3, 16, 16), np.float32))
    assert (ClipReader(plain).info.mastering, ClipReader(plain).info.light_level) == ((), ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to leave out: no warning
        denoise_clip(plain, tmp_path / "plain.mkv")


def test_rgb_source_tags_do_not_mislabel_yuv_output(tmp_path: Path) -> None:
    # an RGB-coded source tagged with the RGB "matrix" (0): a YUV output must not carry that tag (players would
    # read its YUV as GBR), nor one swscale cannot code with
    src = tmp_path / "rgb.mkv"
    with av.open(str(src), "w") as out:
        s = out.add_stream("ffv1", rate=FPS)
        s.width, s.height, s.pix_fmt = 48, 32, "bgr0"
        s.codec_context.color_primaries, s.codec_context.color_trc, s.codec_context.colorspace = 1, 13, 0
        y, x = np.mgrid[0:32, 0:48]
        rgb = np.stack([40 + 3 * x, 60 + 4 * y, 200 - 2 * x - y], -1).clip(0, 255).astype(np.uint8)
        for packet in [*s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")), *s.encode()]:
            out.mux(packet)
    assert ClipReader(src).info.color[:3] == (1, 13, 0)
    clip = read_clip(src)[0]
    out_path = denoise_clip(src, tmp_path / "out.mp4")
    _, tags = luma_and_tags(out_path)
    assert tags[:2] == (1, 13) and tags[2] == 2  # primaries and transfer kept, matrix left unspecified
    assert np.abs(read_clip(out_path)[0] - clip).mean() < 2 / 255  # the colours survive the round trip


# -------------------------------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
@pytest.mark.parametrize("rotation, corner", [(-90, (0, -1)), (90, (-1, 0)), (180, (-1, -1)), (0, (0, 0))])
def test_rotated_video_is_read_upright(tmp_path: Path, ext: str, rotation: int, corner: tuple[int, int]) -> None:
    # phones store portrait video as landscape frames with a display rotation (-90: turn clockwise to show)
    stored = np.full((32, 48), 30, np.uint8)
    stored[:8, :8] = 250  # a mark in the stored frame's top-left corner
    src = tmp_path / f"phone{ext}"
    with av.open(str(src), "w") as out:
        s = out.add_stream("ffv1" if ext == ".mkv" else "libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 48, 32, "gray" if ext == ".mkv" else "yuv444p"
        s.set_display_rotation(rotation)
        for _ in range(2):
            for packet in s.encode(av.VideoFrame.from_ndarray(stored, format="gray")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    clip, info = read_clip(src)
    shown = (48, 32) if rotation % 180 else (32, 48)
    assert info.shape[2:] == shown and clip.shape[2:] == shown and info.rotation == rotation
    frame = clip[0].mean(axis=0)
    r, c = corner
    mark = frame[:8, :8] if (r, c) == (0, 0) else frame[-8:, :8] if (r, c) == (-1, 0) else \
        frame[:8, -8:] if (r, c) == (0, -1) else frame[-8:, -8:]
    assert mark.mean() > 0.9 and frame.mean() < 0.3  # the mark where a player shows it
    # written back upright, with no rotation left to apply
    out_clip, out_info = read_clip(denoise_clip(src, tmp_path / f"out{ext}"))
    assert out_info.rotation == 0 and np.abs(out_clip - clip).max() <= 3 / 255


def test_a_cut_video_file_says_so(tmp_path: Path) -> None:
    """A copy cut short (its header still gives the whole length) is read as the frames it holds, with a warning
    naming both lengths; the whole file reads without one."""
    import warnings

    frames = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    with av.open(str(tmp_path / "whole.mkv"), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "bgr0"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    data = (tmp_path / "whole.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_clip(tmp_path / "whole.mkv")[1].shape[0] == 8
    with pytest.warns(UserWarning, match=r"cut.mkv: its header says 0.32 s but the \d frames that can be read cover "
                                         r"0.\d+ s: the file looks truncated or damaged; only those are used"):
        clip, info = read_clip(tmp_path / "cut.mkv")
    assert 0 < info.shape[0] < 8 and clip.shape[0] == info.shape[0]
