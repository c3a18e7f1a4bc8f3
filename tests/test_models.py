import pytest
import torch

from xmodal.config import Config, ModelConfig
from xmodal.models import DenoisingNet, ModalityIO, SimpleCNN, UNet, build_model
from xmodal.models.heads import ComplexMaskHead, make_head, make_stem
from xmodal.modalities import make_adapter, modality_io

SPEECH = {"speech": modality_io("speech", Config())}


@pytest.mark.parametrize("arch", ["unet", "cnn"])
@pytest.mark.parametrize("hw", [(37, 31), (257, 13), (1, 1), (16, 16)])
def test_any_size(arch, hw):
    model = build_model(ModelConfig(arch=arch, widths=(4, 8, 16), cnn_depth=3), SPEECH)
    x = torch.randn(2, 2, *hw)
    assert model(x, "speech").shape == x.shape


def test_trunk_shapes_and_size_multiple():
    trunk = UNet((4, 8, 16, 32))
    assert trunk.size_multiple == 8
    assert trunk(torch.randn(1, 4, 16, 24)).shape == (1, 4, 16, 24)
    assert SimpleCNN(6, 2)(torch.randn(1, 6, 5, 7)).shape == (1, 6, 5, 7)


def test_per_level_block_counts():
    """``blocks`` as one count per level: that many residual blocks on each side, the bottom level's once."""
    trunk = UNet((4, 8, 16), blocks=(1, 3, 2))
    assert trunk.blocks == (1, 3, 2)
    assert [len(e) for e in trunk.enc] == [1, 3] and [len(d) for d in trunk.dec] == [1, 3] and len(trunk.mid) == 2
    assert trunk(torch.randn(2, 4, 12, 20)).shape == (2, 4, 12, 20)
    per_block = {w: sum(p.numel() for p in UNet((w,)).mid.parameters()) for w in (4, 8, 16)}
    links = sum(p.numel() for p in [*trunk.down.parameters(), *trunk.up.parameters()])
    assert sum(p.numel() for p in trunk.parameters()) == \
        2 * per_block[4] + 6 * per_block[8] + 2 * per_block[16] + links
    # one int is the same count at every level: same modules, same parameter count
    same, uniform = UNet((4, 8, 16), blocks=(2, 2, 2)), UNet((4, 8, 16), blocks=2)
    assert uniform.blocks == (2, 2, 2)
    assert [n for n, _ in same.named_parameters()] == [n for n, _ in uniform.named_parameters()]


def test_per_level_blocks_from_a_recipe(tmp_path):
    from xmodal.config import config_from_dict, dump_config, load_config

    config = config_from_dict({"model": {"widths": [4, 8, 16], "blocks": [1, 2, 1]}})
    assert config.model.blocks == (1, 2, 1)
    assert config_from_dict({"model": {"blocks": 2}}).model.blocks == 2
    dump_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").model.blocks == (1, 2, 1)
    model = build_model(config.model, SPEECH)
    assert model.trunk.blocks == (1, 2, 1)
    assert model(torch.randn(1, 2, 9, 11), "speech").shape == (1, 2, 9, 11)


def test_trunk_is_modality_free():
    import inspect

    import xmodal.models.unet as unet

    source = inspect.getsource(unet)
    for word in ("speech", "audio", "image", "adapter"):
        assert word not in source.lower()


def test_batch_consistency():
    model = build_model(ModelConfig(widths=(4, 8)), SPEECH).eval()
    x = torch.randn(3, 2, 33, 20)
    torch.testing.assert_close(model(x, "speech"), torch.cat([model(x[i:i + 1], "speech") for i in range(3)]),
                               atol=1e-5, rtol=1e-5)


def test_complex_mask_is_bounded():
    head = ComplexMaskHead(4, bound=1.0)
    torch.nn.init.normal_(head.conv.weight, std=10.0)
    h, x = torch.randn(2, 4, 9, 9), torch.randn(2, 2, 9, 9)
    y = head(h, x)
    assert (y.pow(2).sum(1).sqrt() <= x.pow(2).sum(1).sqrt() * 1.0 + 1e-5).all()


def test_residual_head_with_zero_conv_is_identity():
    head = make_head("residual", 4, 3)
    torch.nn.init.zeros_(head.conv.weight)
    torch.nn.init.zeros_(head.conv.bias)
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(head(torch.randn(1, 4, 5, 5), x), x)


def test_several_modalities_in_one_network():
    net = DenoisingNet(UNet((4, 8)), {"speech": modality_io("speech", Config()),
                                      "gray": ModalityIO(1, "conv", "residual", "replicate")})
    assert net(torch.randn(1, 1, 11, 13), "gray").shape == (1, 1, 11, 13)
    assert net(torch.randn(1, 2, 11, 13), "speech").shape == (1, 2, 11, 13)
    assert set(net.modalities) == {"speech", "gray"}


def test_errors():
    model = build_model(ModelConfig(widths=(4, 8)), SPEECH)
    with pytest.raises(KeyError, match=r"no stem/head for modality 'image' \(it has \['speech'\]\)"):
        model(torch.randn(1, 2, 8, 8), "image")
    with pytest.raises(ValueError, match=r"Expected features of shape \(B, 2, H, W\) for speech, got \(1, 3, 8, 8\)"):
        model(torch.randn(1, 3, 8, 8), "speech")
    with pytest.raises(ValueError, match=r"model.widths must be a non-empty list of positive ints, got \[\]"):
        UNet(())
    with pytest.raises(ValueError, match=r"model.blocks must be at least 1, got 0"):
        UNet((4,), blocks=0)
    with pytest.raises(ValueError, match=r"model.blocks must be at least 1, got \[1, 0, 2\]"):
        UNet((4, 8, 16), blocks=(1, 0, 2))
    with pytest.raises(ValueError, match=r"model.blocks must be one int or one int per level \(3 for widths "
                                         r"\[4, 8, 16\]\), got \[1, 2\]"):
        UNet((4, 8, 16), blocks=(1, 2))
    with pytest.raises(ValueError, match=r"model.cnn_depth must be at least 1, got 0"):
        SimpleCNN(4, 0)
    with pytest.raises(ValueError, match=r"model.norm must be 'layer' or 'none', got 'batch'"):
        UNet((4,), norm="batch")
    with pytest.raises(ValueError, match=r"unknown stem kind 'big'"):
        make_stem("big", 2, 4)
    with pytest.raises(ValueError, match=r"unknown head kind 'x'"):
        make_head("x", 4, 2)
    with pytest.raises(ValueError, match=r"the complex_mask head needs 2 feature channels \(real, imag\), got 3"):
        make_head("complex_mask", 4, 3)
    with pytest.raises(ValueError, match=r"model.mask_bound must be positive, got 0"):
        make_head("complex_mask", 4, 2, 0.0)
    with pytest.raises(ValueError, match=r"head output channels 1..3 do not fit 2 inputs"):
        make_head("residual", 4, 2, out_channels=2, offset=1)
    with pytest.raises(ValueError, match=r"unknown modality 'radar' \(known: speech, image, multispectral, video\)"):
        make_adapter("radar", None)


def test_end_to_end_identity_network_round_trip():
    """With the network replaced by identity, decode(encode(x)) gives x back (what the heads preserve)."""
    from xmodal.config import Config

    adapter = make_adapter("speech", Config())
    x = torch.randn(2, 3333) * 0.1
    feats, ctx = adapter.encode(x)
    assert (adapter.decode(torch.nn.Identity()(feats), ctx) - x).abs().max() <= 1e-4


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layer_norm_2d_matches_per_position_formula_with_gradients(memory_format):
    from xmodal.models.layers import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 * torch.randn(2, 5, 7, 9) + 1).contiguous(memory_format=memory_format).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    w_ref, b_ref = norm.weight.detach().clone().requires_grad_(), norm.bias.detach().clone().requires_grad_()
    mean = x_ref.mean(dim=1, keepdim=True)
    var = (x_ref - mean).pow(2).mean(dim=1, keepdim=True)  # biased variance over channels, at each (b, h, w)
    ref = (x_ref - mean) / torch.sqrt(var + norm.eps) * w_ref[:, None, None] + b_ref[:, None, None]
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn(2, 5, 7, 9)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.weight.grad, w_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.bias.grad, b_ref.grad, atol=1e-5, rtol=1e-5)
    # a crop of the input gives the same crop of the output: statistics never mix positions
    torch.testing.assert_close(norm(x[..., 2:5, 3:8]), y[..., 2:5, 3:8])
