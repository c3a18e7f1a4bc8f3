"""Image and band-stack adapters: round trips, channel mapping, noise-level maps, spectral neighbours, and the
shapes that come out of a real network built from the modality registry."""

from dataclasses import replace

import pytest
import torch

from xmodal.adapters.image import ImageAdapter, StackAdapter, spectral_neighbours
from xmodal.config import Config, ImageDataConfig, ModelConfig
from xmodal.modalities import make_adapter, modality_io
from xmodal.models import build_model

TINY_MODEL = ModelConfig(arch="unet", widths=(8, 16), blocks=1)


# --------------------------------------------------------------------------------------------------- ImageAdapter


@pytest.mark.parametrize("channels", [1, 3, 5, 31])
@pytest.mark.parametrize("batched", [False, True])
def test_gray_model_folds_any_channel_count_and_round_trips(channels, batched):
    gen = torch.Generator().manual_seed(channels)
    x = torch.rand(2, channels, 17, 23, generator=gen)
    x = x if batched else x[0]
    adapter = ImageAdapter(1)
    feats, ctx = adapter.encode(x)
    B = 2 if batched else 1
    assert feats.shape == (B * channels, 1, 17, 23)
    assert ctx.mode == ("same" if channels == 1 else "fold")
    # item b * C + c is channel c of image b
    xb = x if batched else x[None]
    assert torch.equal(feats[(B - 1) * channels + channels - 1, 0], xb[B - 1, channels - 1])
    out = adapter.decode(feats, ctx)
    assert out.shape == x.shape
    assert torch.equal(out, x)


@pytest.mark.parametrize("batched", [False, True])
def test_colour_model_same_channels_round_trip(batched):
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    x = x if batched else x[0]
    adapter = ImageAdapter(3)
    feats, ctx = adapter.encode(x)
    assert ctx.mode == "same" and feats.shape == ((2 if batched else 1), 3, 17, 23)
    assert torch.equal(adapter.decode(feats, ctx), x)


def test_colour_model_replicates_gray_and_averages_output():
    adapter = ImageAdapter(3)
    gray = torch.rand(2, 1, 9, 13, generator=torch.Generator().manual_seed(2))
    feats, ctx = adapter.encode(gray)
    assert ctx.mode == "replicate" and feats.shape == (2, 3, 9, 13)
    for c in range(3):
        assert torch.equal(feats[:, c], gray[:, 0])
    torch.testing.assert_close(adapter.decode(feats, ctx), gray, atol=1e-7, rtol=0)  # mean of 3 equal values
    est = torch.stack([torch.full((9, 13), v) for v in (0.1, 0.4, 0.7)])[None].expand(2, 3, 9, 13)
    torch.testing.assert_close(adapter.decode(est, ctx), torch.full((2, 1, 9, 13), 0.4))
    # unbatched gray
    feats, ctx = adapter.encode(gray[0])
    assert feats.shape == (1, 3, 9, 13) and adapter.decode(feats, ctx).shape == (1, 9, 13)


def test_batched_encode_equals_item_by_item():
    adapter = ImageAdapter(1)
    x = torch.rand(3, 4, 11, 7, generator=torch.Generator().manual_seed(3))
    feats, _ = adapter.encode(x)
    items = torch.cat([adapter.encode(x[b])[0] for b in range(3)])
    assert torch.equal(feats, items)


def test_target_encoded_with_the_noisy_context():
    adapter = ImageAdapter(1, noise_map=True)
    noisy = torch.rand(2, 4, 8, 8)  # 3 channels + map
    clean = torch.rand(2, 3, 8, 8)
    feats, ctx = adapter.encode(noisy)
    target, ctx2 = adapter.encode(clean, ctx)
    assert ctx2 is ctx and target.shape == (6, 1, 8, 8)
    with pytest.raises(ValueError, match=r"`ctx` was made for images of shape \(2, 3, 8, 8\), got \(2, 2, 8, 8\)"):
        adapter.encode(clean[:, :2], ctx)


def test_image_adapter_errors():
    adapter = ImageAdapter(1)
    with pytest.raises(ValueError, match=r"Expected `image` of shape \(C, H, W\) or \(B, C, H, W\), got \(5, 6\)"):
        adapter.encode(torch.rand(5, 6))
    with pytest.raises(ValueError, match=r"Expected `image` of shape .* got \(1, 1, 1, 5, 6\)"):
        adapter.encode(torch.rand(1, 1, 1, 5, 6))
    with pytest.raises(ValueError, match=r"Expected a non-empty `image`, got shape \(1, 0, 6\)"):
        adapter.encode(torch.rand(1, 0, 6))
    with pytest.raises(TypeError, match=r"Expected a floating-point `image` \(scaled to \[0, 1\]\), got torch.uint8"):
        adapter.encode(torch.zeros(1, 5, 6, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"Expected `image` to be a torch.Tensor, got ndarray"):
        import numpy as np

        adapter.encode(np.zeros((1, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"this model denoises 3-channel images; got an image with 5 channels "
                                         r"\(use a gray model, which takes any channel count\)"):
        ImageAdapter(3).encode(torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match=r"this model takes a noise-level map: expected \(C \+ 1\) channels, the last "
                                         r"being the per-pixel noise standard deviation, got 1 channel\(s\)"):
        ImageAdapter(1, noise_map=True).encode(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"image.channels must be at least 1, got 0"):
        ImageAdapter(0)


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_noise_map_appended_to_every_folded_item(channels):
    adapter = ImageAdapter(1, noise_map=True)
    assert adapter.channels == 2
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(2, channels, 9, 11, generator=gen)
    sigma = torch.rand(2, 1, 9, 11, generator=gen)
    feats, ctx = adapter.encode(torch.cat([image, sigma], dim=1))
    assert feats.shape == (2 * channels, 2, 9, 11)
    assert ctx.shape == (2, channels, 9, 11)
    for b in range(2):
        for c in range(channels):
            assert torch.equal(feats[b * channels + c, 0], image[b, c])
            assert torch.equal(feats[b * channels + c, 1], sigma[b, 0])
    # the output (model channels only) decodes to the image without the map
    assert torch.equal(adapter.decode(feats[:, :1], ctx), image)


def test_noise_map_on_a_colour_model():
    adapter = ImageAdapter(3, noise_map=True)
    assert adapter.channels == 4
    x = torch.rand(4, 10, 12)  # RGB + map, unbatched
    feats, ctx = adapter.encode(x)
    assert ctx.mode == "same" and feats.shape == (1, 4, 10, 12) and torch.equal(feats[0], x)
    assert torch.equal(adapter.decode(feats[:, :3], ctx), x[:3])
    gray = torch.rand(2, 10, 12)  # gray + map
    feats, ctx = adapter.encode(gray)
    assert ctx.mode == "replicate" and feats.shape == (1, 4, 10, 12)
    assert torch.equal(feats[0, :3], gray[:1].expand(3, -1, -1)) and torch.equal(feats[0, 3], gray[1])
    torch.testing.assert_close(adapter.decode(feats[:, :3], ctx), gray[:1], atol=1e-7, rtol=0)


# --------------------------------------------------------------------------------------------------- spectral


def _mirror(i: int, S: int) -> int:
    """Whole-sample mirror (no repeated edge band), written as a loop: ... 2 1 | 0 1 2 ... S-1 | S-2 S-3 ..."""
    if S == 1:
        return 0
    while not 0 <= i < S:
        i = -i if i < 0 else 2 * (S - 1) - i
    return i


@pytest.mark.parametrize("S", [1, 2, 6, 31])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_spectral_neighbours_against_reference(S, k):
    idx = spectral_neighbours(S, k)
    assert idx.shape == (S, 2 * k + 1) and idx.dtype == torch.int64
    expected = [[_mirror(b + o, S) for o in range(-k, k + 1)] for b in range(S)]
    assert idx.tolist() == expected
    assert idx[:, k].tolist() == list(range(S))  # the middle column is the band itself


def test_spectral_neighbours_known_values():
    assert spectral_neighbours(4, 2).tolist()[0] == [2, 1, 0, 1, 2]
    assert spectral_neighbours(4, 2).tolist()[3] == [1, 2, 3, 2, 1]
    assert spectral_neighbours(2, 3).tolist()[0] == [1, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("S", [1, 5, 31])
@pytest.mark.parametrize("batched", [False, True])
def test_stack_adapter_round_trip(S, batched):
    k = 2
    adapter = StackAdapter(k)
    assert adapter.channels == 5
    x = torch.rand(2, S, 13, 9, generator=torch.Generator().manual_seed(S))
    x = x if batched else x[0]
    feats, ctx = adapter.encode(x)
    B = 2 if batched else 1
    assert feats.shape == (B * S, 2 * k + 1, 13, 9)
    xb = x if batched else x[None]
    idx = spectral_neighbours(S, k)
    for b in range(B):
        for s in range(S):
            for j in range(2 * k + 1):
                assert torch.equal(feats[b * S + s, j], xb[b, idx[s, j]])
    out = adapter.decode(feats[:, k:k + 1], ctx)  # the middle channel is the band itself
    assert out.shape == x.shape and torch.equal(out, x)


def test_stack_adapter_errors():
    with pytest.raises(ValueError, match=r"image.context_bands must be >= 0, got -1"):
        StackAdapter(-1)
    with pytest.raises(ValueError, match=r"Expected `stack` of shape \(C, H, W\) or \(B, C, H, W\), got \(4, 4\)"):
        StackAdapter(1).encode(torch.rand(4, 4))
    adapter = StackAdapter(1)
    _, ctx = adapter.encode(torch.rand(6, 4, 4))
    with pytest.raises(ValueError, match=r"`ctx` was made for stacks of shape \(1, 6, 4, 4\), got \(1, 5, 4, 4\)"):
        adapter.encode(torch.rand(5, 4, 4), ctx)


# --------------------------------------------------------------------------------------------------- network


def _net(modality, **image):
    cfg = Config(modality=modality, model=TINY_MODEL, image=ImageDataConfig(**image))
    torch.manual_seed(0)
    return build_model(cfg.model, {modality: modality_io(modality, cfg)}).eval(), make_adapter(modality, cfg)


@pytest.mark.parametrize("shape", [(1, 17, 23), (3, 17, 23), (2, 5, 31, 37), (11, 13)])
def test_gray_network_output_shapes(shape):
    model, adapter = _net("image", channels=1)
    x = torch.rand(shape)
    if x.ndim == 2:
        with pytest.raises(ValueError, match="Expected `image`"):
            adapter.encode(x)
        return
    feats, ctx = adapter.encode(x)
    with torch.no_grad():
        est = model(feats, "image")
    assert est.shape == feats.shape
    assert adapter.decode(est, ctx).shape == x.shape


def test_colour_and_noise_map_network_shapes():
    model, adapter = _net("image", channels=3, noise_map=True)
    x = torch.rand(2, 4, 19, 21)
    feats, ctx = adapter.encode(x)
    with torch.no_grad():
        est = model(feats, "image")
    assert feats.shape == (2, 4, 19, 21) and est.shape == (2, 3, 19, 21)
    assert adapter.decode(est, ctx).shape == (2, 3, 19, 21)


def test_residual_head_with_zero_conv_returns_the_denoised_channel():
    """The residual head estimates the middle band of a stack item and the image channel (not the map)."""
    model, adapter = _net("multispectral", context_bands=2)
    with torch.no_grad():
        model.heads["multispectral"].conv.weight.zero_()
        model.heads["multispectral"].conv.bias.zero_()
    x = torch.rand(7, 12, 10)
    feats, ctx = adapter.encode(x)
    with torch.no_grad():
        assert torch.equal(adapter.decode(model(feats, "multispectral"), ctx), x)
    model, adapter = _net("image", channels=1, noise_map=True)
    with torch.no_grad():
        model.heads["image"].conv.weight.zero_()
        model.heads["image"].conv.bias.zero_()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        feats, ctx = adapter.encode(torch.cat([x, torch.full((1, 1, 12, 10), 0.5)], 1))
        assert torch.equal(adapter.decode(model(feats, "image"), ctx), x)


def test_multispectral_model_is_band_agnostic():
    model, adapter = _net("multispectral", context_bands=2)
    gen = torch.Generator().manual_seed(5)
    outs = {}
    for S in (6, 10, 200):
        x = torch.rand(S, 9, 11, generator=gen)
        feats, ctx = adapter.encode(x)
        with torch.no_grad():
            est = model(feats, "multispectral")
        assert est.shape == (S, 1, 9, 11)
        outs[S] = adapter.decode(est, ctx)
        assert outs[S].shape == (S, 9, 11) and torch.isfinite(outs[S]).all()
    # band b depends only on bands b-2..b+2: the first 4 bands of a 10-band stack match those of its 6-band prefix
    x = torch.rand(10, 9, 11, generator=gen)
    with torch.no_grad():
        full = adapter.decode(model(adapter.encode(x)[0], "multispectral"), adapter.encode(x)[1])
        prefix = adapter.decode(model(adapter.encode(x[:6])[0], "multispectral"), adapter.encode(x[:6])[1])
    torch.testing.assert_close(full[:4], prefix[:4], atol=1e-6, rtol=0)
    assert not torch.allclose(full[5], prefix[5])  # band 5 is an end band in the prefix: mirrored context differs


def test_modality_io_contracts():
    cfg = Config(modality="image", image=ImageDataConfig(channels=3, noise_map=True))
    io = modality_io("image", cfg)
    assert (io.channels, io.outputs, io.out_offset, io.head) == (4, 3, 0, "residual")
    cfg = replace(cfg, modality="multispectral", image=ImageDataConfig(context_bands=3))
    io = modality_io("multispectral", cfg)
    assert (io.channels, io.outputs, io.out_offset) == (7, 1, 3)
    cfg = replace(cfg, modality="video", image=ImageDataConfig(channels=3, context_frames=2))
    io = modality_io("video", cfg)
    assert (io.channels, io.outputs, io.out_offset) == (15, 3, 6)
    with pytest.raises(ValueError, match=r"unknown modality 'radar'"):
        modality_io("radar", cfg)
