"""Tiled inference: tile plans, blending weights, tiled == untiled for small receptive fields, close on the U-Net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from xmodal.config import load_config
from xmodal.modalities import modality_io
from xmodal.models import build_model
from xmodal.tiling import blend_window, check_tiling, plan_tiles, subsampled_apply, tiled_apply

ROOT = Path(__file__).resolve().parents[1]


def conv_stack(in_channels: int, out_channels: int, depth: int = 3, seed: int = 0) -> nn.Module:
    """``depth`` 3x3 zero-padded convs: one-sided receptive field ``depth`` pixels."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(in_channels if i == 0 else 4, out_channels if i == depth - 1 else 4, 3, padding=1)]
        if i < depth - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize(("length", "tile", "overlap", "multiple"),
                         [(100, 48, 8, 4), (37, 16, 4, 1), (1000, 512, 64, 8), (513, 512, 64, 16), (61, 25, 12, 1),
                          (64, 17, 0, 1), (200, 33, 10, 8), (5, 5, 2, 1)])
def test_plan_tiles_cover_overlap_and_align(length: int, tile: int, overlap: int, multiple: int) -> None:
    tiles = plan_tiles(length, tile, overlap, multiple)
    assert tiles[0][0] == 0 and tiles[-1][1] == length
    for (a, b), (c, d) in zip(tiles, tiles[1:]):
        assert c > a and d > b and b - c >= overlap  # advancing, overlapping by at least `overlap`
    for start, stop in tiles:
        assert start % multiple == 0 and 0 < stop - start <= tile
    if length <= tile:
        assert tiles == [(0, length)]


@pytest.mark.parametrize(("length", "tile", "overlap", "multiple"),
                         [(100, 48, 8, 4), (37, 16, 4, 1), (61, 25, 12, 1), (64, 17, 0, 1), (200, 33, 10, 8)])
def test_blend_weights_sum_to_one(length: int, tile: int, overlap: int, multiple: int) -> None:
    tiles = plan_tiles(length, tile, overlap, multiple)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, stop), w in zip(tiles, blend_window(tiles, length, overlap)):
        assert w.shape == (stop - start,) and bool((w >= 0).all())
        total[start:stop] += w
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64), atol=1e-12, rtol=0)
    if len(tiles) > 1:  # the image's own borders get full weight; a tile's inner edge gets none
        w = blend_window(tiles, length, overlap)
        assert w[0][0] == 1.0 and w[-1][-1] == 1.0
        if overlap >= 4:
            assert w[0][-1] == 0.0 and w[-1][0] == 0.0


@pytest.mark.parametrize("shape", [(1, 1, 61, 53), (2, 3, 64, 37), (1, 1, 7, 64), (3, 1, 33, 33)])
def test_constant_function_gives_ones(shape: tuple[int, ...]) -> None:
    """fn = 1 everywhere: the blended output is the sum of the weights."""
    x = torch.rand(shape)
    y = tiled_apply(lambda t: torch.ones(t.shape[0], 2, *t.shape[-2:]), x, tile=20, overlap=6, multiple=4)
    assert y.shape == (shape[0], 2, *shape[-2:])
    torch.testing.assert_close(y, torch.ones_like(y), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("shape", "tile", "overlap"), [((61, 53), 25, 12), ((64, 64), 24, 8), ((37, 31), 18, 8),
                                                        ((50, 13), 20, 8)])
def test_tiled_equals_untiled_when_receptive_field_fits(channels: int, shape: tuple[int, int], tile: int,
                                                        overlap: int) -> None:
    """Receptive field 2 <= overlap // 4: the blended tiles reproduce the whole-image output."""
    net = conv_stack(channels, channels, depth=2)
    x = torch.rand(2, channels, *shape)
    with torch.no_grad():
        ref = net(x)
        out = tiled_apply(net, x, tile=tile, overlap=overlap)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_tiled_equals_untiled_on_the_grid_of_a_strided_net() -> None:
    """A stride-2 down/up net (size multiple 2) with receptive field <= overlap // 4 and aligned tile starts."""
    torch.manual_seed(0)
    down, up = nn.Conv2d(1, 4, 2, stride=2), nn.ConvTranspose2d(4, 1, 2, stride=2)

    def net(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        tp = nn.functional.pad(t, (0, w % 2, 0, h % 2), mode="replicate")
        return up(torch.tanh(down(tp)))[..., :h, :w]

    x = torch.rand(1, 1, 63, 57)
    with torch.no_grad():
        torch.testing.assert_close(tiled_apply(net, x, 22, 8, multiple=2), net(x), atol=1e-5, rtol=0)


def test_one_tile_is_one_call() -> None:
    calls = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return t * 2

    x = torch.rand(1, 3, 40, 30)
    assert torch.equal(tiled_apply(fn, x, tile=40, overlap=8), x * 2)
    assert calls == [(1, 3, 40, 30)]
    calls.clear()
    tiled_apply(fn, x, tile=20, overlap=4)
    assert len(calls) == 3 * 2 and all(h <= 20 and w <= 20 for *_, h, w in calls)


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    cfg = load_config(ROOT / "recipes" / "tiny_image.yaml")
    torch.manual_seed(0)
    return build_model(cfg.model, {"image": modality_io("image", cfg)}).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_close_to_untiled_on_the_tiny_unet(unet: nn.Module, seed: int) -> None:
    """The tiny U-Net's one-sided receptive field is 11 px, more than overlap // 4 = 4, so tiles are not exact.

    Measured on 64 x 63 inputs over 3 inits x 5 inputs (tile 48, overlap 16, multiple 2): max |diff| <= 4.2e-3,
    mean <= 1.5e-4 (outputs are ~[0, 1]); the bounds below leave a margin of ~2.4x and ~6x.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 64, 63, generator=g)
    with torch.no_grad():
        ref = unet(x, "image")
        out = tiled_apply(lambda t: unet(t, "image"), x, tile=48, overlap=16, multiple=unet.trunk.size_multiple)
    diff = (out - ref).abs()
    assert diff.max() < 1e-2 and diff.mean() < 1e-3
    assert diff.max() > 0  # tiles really were used (else this test proves nothing)


def test_output_channels_and_dtype_follow_fn() -> None:
    x = torch.rand(1, 3, 30, 41, dtype=torch.float64)
    y = tiled_apply(lambda t: t.mean(dim=1, keepdim=True), x, tile=16, overlap=4)
    assert y.shape == (1, 1, 30, 41) and y.dtype == torch.float64
    torch.testing.assert_close(y, x.mean(dim=1, keepdim=True))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tile": 0}, r"`tile` must be an integer >= 1, got 0"),
    ({"tile": 16.5}, r"`tile` must be an integer >= 1, got 16.5"),
    ({"overlap": -1}, r"`overlap` must be an integer >= 0, got -1"),
    ({"multiple": 0}, r"`multiple` must be an integer >= 1, got 0"),
    ({"tile": 16, "overlap": 8}, r"`tile` \(16\) must exceed 2 \* `overlap` \(16\)"),
    ({"tile": 16, "overlap": 4, "multiple": 16}, r"`tile` - `overlap` \(16 - 4\) must be at least `multiple` \(16\)"),
])
def test_argument_errors(kwargs: dict, match: str) -> None:
    args = {"tile": 32, "overlap": 8, "multiple": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        tiled_apply(lambda t: t, torch.rand(1, 1, 40, 40), **args)
    with pytest.raises(ValueError, match=match):
        check_tiling(args["tile"], args["overlap"], args["multiple"])


def test_input_and_fn_errors() -> None:
    with pytest.raises(TypeError, match=r"Expected `x` to be a torch.Tensor, got list"):
        tiled_apply(lambda t: t, [[1.0]])
    with pytest.raises(ValueError, match=r"Expected `x` of shape \(B, C, H, W\) with no empty axis, got \(3, 4, 5\)"):
        tiled_apply(lambda t: t, torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match=r"no empty axis, got \(1, 1, 0, 5\)"):
        tiled_apply(lambda t: t, torch.rand(1, 1, 0, 5))
    with pytest.raises(ValueError, match=r"`fn` must map \(B, C, h, w\) to \(B, C', h, w\); .*returned \(1, 1, 9, 9\)"):
        tiled_apply(lambda t: t[..., :9, :9], torch.rand(1, 1, 40, 40), tile=16, overlap=4)
    with pytest.raises(ValueError, match=r"length` must be an integer >= 1, got 0"):
        plan_tiles(0, 16, 4)


@pytest.mark.parametrize(("shape", "stride"), [((2, 3, 12, 10), 2), ((1, 1, 13, 7), 2), ((1, 2, 11, 16), 3),
                                               ((1, 1, 5, 9), 5)])
def test_subsampled_apply_interleaves_the_sub_images(shape: tuple[int, ...], stride: int) -> None:
    """Output pixel (y, x) is ``fn``'s output on sub-image ``(y % s, x % s)`` at ``(y // s, x // s)``; sizes that
    are not multiples of the stride repeat the last rows/columns and crop them off; ``fn`` sees one sub-image at a
    time, with the batch of the input."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(subsampled_apply(lambda t: t, x, stride), x)
    net = conv_stack(shape[1], 2, depth=2)
    seen = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return net(t)

    with torch.no_grad():
        y = subsampled_apply(fn, x, stride)
        B, C, H, W = shape
        padded = nn.functional.pad(x, (0, -W % stride, 0, -H % stride), mode="replicate")
        assert y.shape == (B, 2, H, W)
        assert seen == [(B, C, padded.shape[-2] // stride, padded.shape[-1] // stride)] * stride ** 2
        for i in range(stride):
            for j in range(stride):
                expected = net(padded[..., i::stride, j::stride])
                got = y[..., i::stride, j::stride]
                torch.testing.assert_close(got, expected[..., :got.shape[-2], :got.shape[-1]])
    assert torch.equal(subsampled_apply(net, x, 1), net(x))


@pytest.mark.parametrize(("stride", "match"), [(0, r"`stride` must be an integer >= 1, got 0"),
                                               (1.5, r"`stride` must be an integer >= 1, got 1.5"),
                                               (6, r"`stride` \(6\) must be at most the image's smaller side "
                                                   r"\(5 pixels\)")])
def test_subsampled_apply_errors(stride: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        subsampled_apply(lambda t: t, torch.rand(1, 1, 5, 9), stride)  # type: ignore[arg-type]
