import re
from pathlib import Path

import pytest
import yaml

from xmodal.config import (Config, ConfigError, bundled_recipes, config_to_dict, dump_config, load_config,
                           parse_overrides)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_recipes_load():
    cfg = load_config(None)
    assert cfg == Config()
    recipes = sorted(Path("recipes").glob("*.yaml"))
    assert len(recipes) >= 16
    for recipe in recipes:
        load_config(recipe)
    noise = load_config("recipes/image_color_real_bundled.yaml").image.noise
    assert noise.kind == "camera" and noise.jpeg_quality == (60, 100) and noise.peak == (30.0, 10000.0)


def test_recipes_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names resolve wherever the command runs
    assert set(bundled_recipes()) == {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    assert load_config("tiny", ["train.max_steps=9"]) == load_config(REPO / "recipes" / "tiny.yaml",
                                                                     ["train.max_steps=9"])
    assert load_config("speech").modality == "speech" and load_config("multispectral").modality == "multispectral"
    # a file of that name in the working directory wins over the bundled recipe
    write(tmp_path, "train:\n  max_steps: 7\n", name="tiny")
    assert load_config("tiny").train.max_steps == 7
    # an unknown name lists the general recipes; a path gets no list
    with pytest.raises(ConfigError) as e:
        load_config("speeh")
    assert str(e.value).startswith("speeh: recipe file not found; recipes that come with xmodal: image, joint, ")
    assert " speech, tiny," in str(e.value) and "speech_bundled" not in str(e.value)
    assert "*_bundled* recipes, those the bundled models were trained with)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config("recipes/speeh.yaml")
    assert str(e.value) == "recipes/speeh.yaml: recipe file not found"


def test_every_package_folder_ships():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "xmodal").rglob("__init__.py")}
    assert set(setup["packages"]) == folders | {"xmodal.recipes"}
    assert setup["package-dir"] == {"xmodal.recipes": "recipes"}
    assert setup["package-data"]["xmodal.recipes"] == ["*.yaml"]


@pytest.mark.parametrize("overrides, message", [
    (["image.noise.sigma=[0, 50]"], r"`image.noise.sigma` is a fraction of full scale \(pixels and bands run 0-1: "
                                    r"25/255 is 0.098\), got \[0.0, 50.0\]: a level on the 0-255 scale\?"),
    (["image.valid_noise.sigma=[25, 25]"], r"`image.valid_noise.sigma` is a fraction of full scale"),
    (["image.noise_mix=[{kind: rician, sigma: [0, 20]}]"], r"`image.noise_mix\[0\].sigma` is a fraction"),
    (["image.noise_then=[{kind: stripe, sigma: [0, 20]}]"], r"`image.noise_then\[0\].sigma` is a fraction"),
    (["image.valid_noise_then=[{kind: gaussian, sigma: [5, 5]}]"], r"`image.valid_noise_then\[0\].sigma` is a "
                                                                   r"fraction"),
    (["image.pairs_dir=/tmp/pairs", "image.noise_then=[{kind: salt_and_pepper}]"],
     r"image.noise_then adds to the noise xmodal synthesises: it cannot apply to noisy/clean pairs "
     r"\(image.pairs_dir\)"),
    (["image.patch_size=7", "image_loss.ssim=0.2"],
     r"image_loss.ssim needs image.patch_size of at least 11 \(its 11 x 11 window\), got 7"),
    (["image_loss.ms_ssim=0.2"], r"image_loss.ms_ssim needs image.patch_size above 160 \(5 scales\), got 32; raise "
                                 r"image.patch_size or use image_loss.ssim"),
])
def test_image_settings_caught_before_training(overrides, message):
    """Mistakes that used to train silently (a sigma on the 0-255 scale, an SSIM window larger than the patch) or fail
    at the first step with a run directory half made (MS-SSIM on small patches) stop at the recipe."""
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "recipes" / "tiny_image.yaml", ["image.patch_size=32", *overrides])
    # speckle's sigma is relative (of the signal), not of full scale
    assert load_config(REPO / "recipes" / "tiny_image.yaml", ["image.noise={kind: speckle, sigma: [0, 1.5]}"])


def test_camera_noise_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"`image.noise`: NoiseSpec.jpeg_quality must be integers with "
                                          r"1 <= low <= high <= 100, got \(0, 100\)"):
        load_config("recipes/image_color_real_bundled.yaml", ["image.noise.jpeg_quality=[0, 100]"])
    with pytest.raises(ConfigError, match=r"NoiseSpec.jpeg_quality is for kind 'camera', got kind 'gaussian'"):
        load_config("recipes/image.yaml", ["image.noise.jpeg_quality=[80, 90]"])


def test_unknown_key_names_file_dotted_key_and_close_match(tmp_path):
    p = write(tmp_path, "optim:\n  lr_shedule: 1\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown key `optim\.lr_shedule`"):
        load_config(p)
    p = write(tmp_path, "optim:\n  warmup_step: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key `optim\.warmup_step` \(did you mean `optim\.warmup_steps`\?\)"):
        load_config(p)


def test_unknown_section_and_no_close_match_lists_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key `optimizer` \(did you mean `optim`\?\)"):
        load_config(write(tmp_path, "optimizer: {}\n"))
    with pytest.raises(ConfigError, match=r"unknown key `train\.zzz` \(valid keys: run_dir, max_steps"):
        load_config(write(tmp_path, "train:\n  zzz: 1\n"))


def test_wrong_type_messages(tmp_path):
    with pytest.raises(ConfigError, match=r"`train\.max_steps` must be int, got str 'many'"):
        load_config(write(tmp_path, "train:\n  max_steps: many\n"))
    with pytest.raises(ConfigError, match=r"`train\.resume` must be bool, got int 1"):
        load_config(write(tmp_path, "train:\n  resume: 1\n"))
    with pytest.raises(ConfigError, match=r"`train\.precision` must be 'fp32' \| 'bf16' \| 'fp16', got str 'fp8'"):
        load_config(write(tmp_path, "train:\n  precision: fp8\n"))
    with pytest.raises(ConfigError, match=r"`data\.snr_range` must be a list of 2 \(float, float\)"):
        load_config(write(tmp_path, "data:\n  snr_range: [1, 2, 3]\n"))
    with pytest.raises(ConfigError, match=r"`model\.widths` must be a list of int, got list"):
        load_config(write(tmp_path, "model:\n  widths: [8, x]\n"))
    with pytest.raises(ConfigError, match=r"`model\.blocks` must be int or a list of int, got str 'two'"):
        load_config(write(tmp_path, "model:\n  blocks: two\n"))


def test_non_mapping_section_and_recipe(tmp_path):
    with pytest.raises(ConfigError, match=r"r\.yaml: section `optim` must be a mapping, got list"):
        load_config(write(tmp_path, "optim: [1, 2]\n"))
    with pytest.raises(ConfigError, match=r"a recipe must be a mapping of sections, got list"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: recipe file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"r\.yaml: invalid YAML"):
        load_config(write(tmp_path, "optim: [1,\n"))


def test_scientific_notation_string_is_a_float(tmp_path):
    # PyYAML reads `3e-4` (no dot) as a string; the loader must still give a float.
    assert yaml.safe_load("x: 3e-4")["x"] == "3e-4"
    assert load_config(write(tmp_path, "optim:\n  lr: 3e-4\n")).optim.lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match=r"`optim\.lr` must be float, got str 'fast'"):
        load_config(write(tmp_path, "optim:\n  lr: fast\n"))


def test_overrides(tmp_path):
    cfg = load_config("recipes/tiny.yaml", ["train.max_steps=7", "optim.lr=1e-4", "model.widths=[4, 8, 16]",
                                            "data.clean_dir=/a", f"train.run_dir={tmp_path}"])
    assert cfg.train.max_steps == 7
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.model.widths == (4, 8, 16)
    assert cfg.data.clean_dir == ("/a",)  # a single value where a list is expected
    assert cfg.train.run_dir == str(tmp_path)


def test_override_errors():
    with pytest.raises(ConfigError, match=r"override `optim\.warmup_step=1`: unknown key `optim\.warmup_step` "
                                          r"\(did you mean `optim\.warmup_steps`\?\)"):
        load_config(None, ["optim.warmup_step=1"])
    with pytest.raises(ConfigError, match=r"override `trian\.max_steps=1`: unknown key `trian` "
                                          r"\(did you mean `train`\?\)"):
        load_config(None, ["trian.max_steps=1"])
    with pytest.raises(ConfigError, match=r"override `train\.max_steps=abc`: `train\.max_steps` must be int"):
        load_config(None, ["train.max_steps=abc"])
    with pytest.raises(ConfigError, match=r"override `train\.max_steps\.x=1`: `train\.max_steps` is a value, "
                                          r"not a section"):
        load_config(None, ["train.max_steps.x=1"])
    with pytest.raises(ConfigError, match=r"override `max_steps`: expected `key\.sub=value`"):
        parse_overrides(["max_steps"])
    with pytest.raises(ConfigError, match=r"override `a=\[1,`: value is not valid YAML"):
        parse_overrides(["a=[1,"])


def test_dump_round_trip(tmp_path):
    cfg = load_config("recipes/speech_bundled.yaml", ["train.max_steps=3"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert config_to_dict(cfg)["model"]["widths"] == list(cfg.model.widths)


@pytest.mark.parametrize("override, message", [
    ("train.log_every=0", r"`train\.log_every` must be at least 1, got 0"),
    ("optim.lr=-1", r"`optim\.lr` must be a finite number >= 0, got -1\.0"),
    ("optim.lr=nan", r"`optim\.lr` must be a finite number >= 0, got nan"),
    ("optim.lr=1e999", r"`optim\.lr` must be a finite number >= 0, got inf"),
    ("optim.betas=[0.9,1.5]", r"`optim\.betas\[1\]` must be in \[0, 1\), got 1\.5"),
    ("optim.weight_decay=-1", r"`optim\.weight_decay` must be a finite number >= 0, got -1\.0"),
    ("optim.min_lr_ratio=2", r"`optim\.min_lr_ratio` must be in \[0, 1\], got 2\.0"),
    ("optim.grad_clip=-1", r"`optim\.grad_clip` must be a finite number >= 0 \(0 = off\), got -1\.0"),
    ("optim.warmup_steps=-1", r"`optim\.warmup_steps` must be >= 0, got -1"),
    ("data.num_workers=-1", r"`data\.num_workers` must be >= 0, got -1"),
    ("data.epoch_size=0", r"`data\.epoch_size` must be at least 1, got 0"),
    ("data.valid_fraction=1", r"`data\.valid_fraction` must be in \[0, 1\), got 1\.0"),
    ("data.segment_seconds=0", r"`data\.segment_seconds` must be a finite number > 0, got 0\.0"),
    ("data.snr_range=[5,1]",
     r"`data\.snr_range` must be a finite \[low, high\] range with low <= high, got \[5\.0, 1\.0\]"),
    ("data.seed=-1", r"`data\.seed` must be an int >= 0, got -1"),
    ("audio.sample_rate=0", r"`audio\.sample_rate` must be at least 1, got 0"),
    ("audio.compress=0", r"`audio\.compress` must be in \(0, 1\], got 0\.0"),
    ("audio.hop_length=300", r"`audio\.hop_length` must be at most the window length \(256\), got 300"),
    ("audio.win_length=512", r"`audio\.win_length` must be at most `audio\.n_fft` \(256\), got 512"),
    ("model.blocks=[1,0]", r"`model\.blocks\[1\]` must be at least 1, got 0"),
    ("model.mask_bound=0", r"`model\.mask_bound` must be a finite number > 0, got 0\.0"),
    ("loss.waveform=-1", r"`loss\.waveform` must be a finite number >= 0, got -1\.0"),
    ("loss.mrstft_ffts=[512,2]", r"`loss\.mrstft_ffts\[1\]` must be at least 4 \(the hop is n_fft / 4\), got 2"),
    ("image.num_workers=-1", r"`image\.num_workers` must be >= 0, got -1"),
    ("image.patch_size=0", r"`image\.patch_size` must be at least 1, got 0"),
    ("image.valid_rows=1", r"`image\.valid_rows` must be in \[0, 1\), got 1\.0"),
    ("image_loss.ssim=-0.5", r"`image_loss\.ssim` must be a finite number >= 0, got -0\.5"),
    ("train.threads=-2", r"`train\.threads` must be >= 0 \(0 = torch's default\), got -2"),
    ("train.save_every=-1", r"`train\.save_every` must be >= 0 \(0 = at validations and at the end only\), got -1"),
    ("train.eval_every=-1", r"`train\.eval_every` must be >= 0 \(0 = only at the end\), got -1"),
    ("train.batch_size=0", r"`train\.batch_size` must be at least 1, got 0"),
    ("train.max_steps=-1", r"`train\.max_steps` must be >= 0, got -1"),
])
def test_out_of_range_values_name_the_dotted_key(override, message):
    with pytest.raises(ConfigError, match=rf"^override `{re.escape(override)}`: {message}$"):
        load_config("recipes/tiny.yaml", [override])


def test_range_checks_in_recipes_and_allowed_edges(tmp_path):
    with pytest.raises(ConfigError, match=r"r\.yaml: `optim\.lr` must be a finite number >= 0, got -0\.1"):
        load_config(write(tmp_path, "optim:\n  lr: -0.1\n"))
    cfg = load_config("recipes/tiny.yaml", ["optim.lr=0", "train.eval_every=0", "train.save_every=0",
                                            "train.threads=0", "data.num_workers=0", "optim.grad_clip=0",
                                            "data.valid_fraction=0", "optim.betas=[0, 0.5]", "audio.win_length=128",
                                            "audio.hop_length=128"])
    assert cfg.optim.lr == 0.0 and cfg.audio.hop_length == 128 and cfg.optim.betas == (0.0, 0.5)
