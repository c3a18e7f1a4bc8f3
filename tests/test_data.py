import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import chirp
from xmodal.config import SpeechDataConfig
from xmodal.data import MixingDataset, StepBatchSampler, mix_at_snr, resolve_speech_data
from xmodal.io import list_audio_files


def snr_db(clean, noisy):
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2))


def test_mix_at_snr_exact():
    rng = np.random.default_rng(0)
    clean, noise = chirp(1.0, 16000), rng.standard_normal(16000).astype(np.float32)
    for snr in (-5.0, 0.0, 7.5, 20.0):
        assert snr_db(clean, mix_at_snr(clean, noise, snr)) == pytest.approx(snr, abs=1e-3)
    with pytest.raises(ValueError, match=r"mix_at_snr: the noise segment is silent"):
        mix_at_snr(clean, np.zeros_like(clean), 0.0)
    with pytest.raises(ValueError, match=r"mix_at_snr: clean and noise shapes differ"):
        mix_at_snr(clean, noise[:10], 0.0)


def test_mixing_dataset_deterministic_and_in_range(demo_corpus):
    clean_dir, noise_dir = demo_corpus
    ds = MixingDataset(list_audio_files(clean_dir), list_audio_files(noise_dir), 16000, 0.5, (0.0, 10.0),
                       (-6.0, 6.0), epoch_size=10, seed=3)
    noisy, clean = ds[7]
    assert noisy.shape == clean.shape == (1, 8000) and noisy.dtype == torch.float32
    again = MixingDataset(list_audio_files(clean_dir), list_audio_files(noise_dir), 16000, 0.5, (0.0, 10.0),
                          (-6.0, 6.0), epoch_size=10, seed=3)
    _ = again[3]  # another order of access changes nothing
    torch.testing.assert_close(again[7][0], noisy)
    assert not torch.equal(ds[8][0], noisy)
    for n in range(6):
        noisy, clean = ds[n]
        assert noisy.abs().max() <= 0.99 + 1e-6
        assert -0.01 <= snr_db(clean.numpy(), noisy.numpy()) <= 10.01


def test_mixing_dataset_resamples_other_rates(tmp_path):
    for sr in (8000, 22050):
        sf.write(tmp_path / f"c{sr}.wav", chirp(1.0, sr), sr, subtype="PCM_16")
    sf.write(tmp_path / "n.wav", np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.1, 44100)
    ds = MixingDataset([tmp_path / "c8000.wav", tmp_path / "c22050.wav"], [tmp_path / "n.wav"], 16000, 0.25,
                       (5.0, 5.0), (0.0, 0.0), 4, 0)
    assert ds.clean.get(0).shape == (16000,) and ds.clean.get(1).shape == (16000,)
    assert ds.noise.get(0).shape == (16000,)
    noisy, clean = ds[0]
    assert snr_db(clean.numpy(), noisy.numpy()) == pytest.approx(5.0, abs=0.01)


def test_mixing_dataset_errors(demo_corpus):
    files = list_audio_files(demo_corpus[0])
    with pytest.raises(ValueError, match=r"MixingDataset: no noise files"):
        MixingDataset(files, [], 16000, 1.0, (0, 1), (0, 1), 1, 0)
    with pytest.raises(ValueError, match=r"data.snr_range must be \(low, high\) with low <= high, got \[5.0, 1.0\]"):
        MixingDataset(files, files, 16000, 1.0, (5.0, 1.0), (0, 1), 1, 0)
    with pytest.raises(ValueError, match=r"data.segment_seconds must be positive, got 0"):
        MixingDataset(files, files, 16000, 0, (0, 1), (0, 1), 1, 0)


def make_pairs(root, names=("a.wav", "b.wav", "c.wav"), clean_extra=()):
    (root / "noisy").mkdir(parents=True)
    (root / "clean").mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        c = chirp(1.0 + 0.1 * i, 16000)
        sf.write(root / "clean" / n, c, 16000)
        sf.write(root / "noisy" / n, c + 0.05 * rng.standard_normal(c.shape).astype(np.float32), 16000)
    for n in clean_extra:
        sf.write(root / "clean" / n, chirp(1.0, 16000), 16000)
    return root


def test_paired_dataset_same_crop_and_epoch_order(tmp_path):
    root = make_pairs(tmp_path / "pairs")
    cfg = SpeechDataConfig(pairs_dir=str(root), valid_fraction=0.3, segment_seconds=0.5)
    corpus = resolve_speech_data(cfg, 16000, tmp_path / "demo")
    assert len(corpus.train) == 2 and len(corpus.valid) == 1
    ds = corpus.train
    noisy, clean = ds[1]
    assert noisy.shape == clean.shape == (1, 8000)
    assert (noisy - clean).abs().max() < 0.3  # same crop from both files (a shifted crop would differ by ~0.6)
    for epoch in range(3):
        assert sorted(ds.pair_index(epoch * 2 + k) for k in range(2)) == [0, 1]  # every pair once per epoch


def test_paired_errors(tmp_path):
    root = make_pairs(tmp_path / "p", clean_extra=("zz.wav",))
    with pytest.raises(ValueError, match=r"1 file\(s\) without a partner in noisy/ and clean/: zz.wav"):
        resolve_speech_data(SpeechDataConfig(pairs_dir=str(root)), 16000, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"paired data needs folders `noisy/` and `clean/`"):
        resolve_speech_data(SpeechDataConfig(pairs_dir=str(tmp_path / "none")), 16000, tmp_path)
    with pytest.raises(ValueError, match=r"data: give either `pairs_dir` or `clean_dir` \+ `noise_dir`, not both"):
        resolve_speech_data(SpeechDataConfig(pairs_dir=str(root), clean_dir=("x",)), 16000, tmp_path)
    with pytest.raises(ValueError, match=r"data: on-the-fly mixing needs both `clean_dir` and `noise_dir`"):
        resolve_speech_data(SpeechDataConfig(clean_dir=("x",)), 16000, tmp_path)


def test_split_by_names_and_validation_mixtures(demo_corpus, tmp_path):
    clean_dir, noise_dir = demo_corpus
    names = [f.name for f in list_audio_files(clean_dir)]
    noises = [f.name for f in list_audio_files(noise_dir)]
    cfg = SpeechDataConfig(clean_dir=(str(clean_dir),), noise_dir=(str(noise_dir),), valid_clean=tuple(names[:2]),
                           valid_noise=(noises[0],), valid_snrs=(0.0, 10.0))
    corpus = resolve_speech_data(cfg, 16000, tmp_path)
    assert len(corpus.valid) == 2 * 1 * 2 and not corpus.demo
    assert all(f.name not in names[:2] for f in corpus.train.clean.files)
    for clip in corpus.valid:
        expected = float(clip.name.split("@")[1].replace("dB", ""))
        assert snr_db(clip.clean[0].numpy(), clip.noisy[0].numpy()) == pytest.approx(expected, abs=1e-3)
    again = resolve_speech_data(cfg, 16000, tmp_path)
    torch.testing.assert_close(again.valid[1].noisy, corpus.valid[1].noisy)
    with pytest.raises(ValueError, match=r"data.valid_clean: nope.wav not found among the clean files"):
        resolve_speech_data(SpeechDataConfig(clean_dir=(str(clean_dir),), noise_dir=(str(noise_dir),),
                                             valid_clean=("nope.wav",)), 16000, tmp_path)
    with pytest.raises(ValueError, match=r"data.valid_fraction must be in \[0, 1\), got 1.0"):
        resolve_speech_data(SpeechDataConfig(clean_dir=(str(clean_dir),), noise_dir=(str(noise_dir),),
                                             valid_fraction=1.0), 16000, tmp_path)


def test_demo_corpus_when_no_data(tmp_path):
    corpus = resolve_speech_data(SpeechDataConfig(valid_snrs=(5.0,)), 16000, tmp_path / "demo")
    assert corpus.demo and "DEMO" in corpus.description
    assert (tmp_path / "demo" / "clean").is_dir() and len(corpus.valid) > 0


def test_audio_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing: audio folder not found"):
        list_audio_files(tmp_path / "missing")
    (tmp_path / "c0.wav").write_bytes(b"RIFF")
    with pytest.raises(FileNotFoundError, match=r"c0.wav: a file, where a folder of audio files is expected \(give "
                                                r"its folder\)"):
        list_audio_files(tmp_path / "c0.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no audio files"):
        list_audio_files(tmp_path / "empty")


def test_step_batch_sampler_ranks_cover_the_global_batch():
    single = list(StepBatchSampler(6, max_steps=4, start_step=1))
    ranks = [list(StepBatchSampler(6, 4, 1, rank=r, world_size=3)) for r in range(3)]
    for step in range(3):
        assert sorted(sum((ranks[r][step] for r in range(3)), [])) == single[step]
    assert single[0] == [6, 7, 8, 9, 10, 11] and len(single) == 3
    with pytest.raises(ValueError, match=r"train.batch_size \(5\) must be divisible by the number of DDP processes "
                                         r"\(2\)"):
        StepBatchSampler(5, 10, world_size=2)
    with pytest.raises(ValueError, match=r"train.batch_size must be at least 1, got 0"):
        StepBatchSampler(0, 10)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        StepBatchSampler(4, 10, rank=2, world_size=2)


def test_demo_pairs_cli(tmp_path, capsys):
    from xmodal.data.synthetic import main as demo_main

    assert demo_main([str(tmp_path / "d"), "--pairs", "2", "--snr", "3"]) == 0
    assert "wrote 2 demo speech pairs" in capsys.readouterr().out
    mono, stereo = sf.info(tmp_path / "d/noisy/demo_00.wav"), sf.info(tmp_path / "d/noisy/demo_01.wav")
    assert (mono.samplerate, mono.channels, stereo.samplerate, stereo.channels) == (16000, 1, 44100, 2)
    clean, _ = sf.read(tmp_path / "d/clean/demo_00.wav", dtype="float32")
    noisy, _ = sf.read(tmp_path / "d/noisy/demo_00.wav", dtype="float32")
    assert snr_db(clean, noisy) == pytest.approx(3.0, abs=0.05)  # 16-bit rounding
    with pytest.raises(SystemExit):
        demo_main([str(tmp_path / "e"), "--pairs", "0"])
    assert "--pairs must be at least 1, got 0" in capsys.readouterr().err


def test_demo_image_and_stack_pairs_cli(tmp_path):
    """`python -m xmodal.data.synthetic OUT --kind image|stack` writes matching noisy/clean files at the stated
    noise."""
    from xmodal.data.synthetic import main as demo_main
    from xmodal.imageio import read_image, read_stack

    assert demo_main([str(tmp_path / "img"), "--kind", "image", "--pairs", "2"]) == 0
    for name, channels in (("demo_00.png", 1), ("demo_01.png", 3)):
        clean, info = read_image(tmp_path / "img" / "clean" / name)
        noisy, _ = read_image(tmp_path / "img" / "noisy" / name)
        assert info.dtype == "uint8" and clean.shape == noisy.shape == (channels, 128, 160)
        assert abs(float(np.std(noisy - clean)) - 25 / 255) < 0.02  # sigma 25, a little less after clipping
    assert demo_main([str(tmp_path / "st"), "--kind", "stack"]) == 0
    clean, info = read_stack(tmp_path / "st" / "stack_clean.tif", "dtype")
    noisy, _ = read_stack(tmp_path / "st" / "stack_noisy.tif", "dtype")
    assert clean.shape == noisy.shape == (8, 128, 128) and info.dtype == ("uint16",) * 8
    span = clean.max(axis=(1, 2)) - clean.min(axis=(1, 2))
    rel = np.std(noisy - clean, axis=(1, 2)) / span  # noise relative to each band's full scale
    assert np.all(np.abs(rel - 0.05) < 0.01), rel


def test_silent_validation_noise_names_both_files_and_the_snr(demo_corpus, tmp_path):
    clean_dir, noise_dir = demo_corpus
    quiet_dir = tmp_path / "noise"
    quiet_dir.mkdir()
    for f in list_audio_files(noise_dir):
        (quiet_dir / f.name).write_bytes(f.read_bytes())
    sf.write(quiet_dir / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)
    first_clean = list_audio_files(clean_dir)[0]
    cfg = SpeechDataConfig(clean_dir=(str(clean_dir),), noise_dir=(str(quiet_dir),), valid_clean=(first_clean.name,),
                           valid_noise=("quiet.wav",), valid_snrs=(5.0,))
    with pytest.raises(ValueError, match=rf"{quiet_dir / 'quiet.wav'}: the validation noise segment mixed into "
                                         rf"{first_clean} at 5 dB SNR is silent .*remove the file from the "
                                         r"validation noise \(data.valid_noise, data.noise_dir\)"):
        resolve_speech_data(cfg, 16000, tmp_path)
