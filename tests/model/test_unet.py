import pytest
import torch

from unetseg import UNet, UNetConfig


def test_seed_model_has_the_seed_parameter_count():
    assert sum(p.numel() for p in UNet().parameters()) == 31_037_633


def test_seed_model_layers_are_the_specified_ones():
    model = UNet()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(c.bias is None and c.padding == (1, 1) for c in convs if c.kernel_size == (3, 3))
    assert [u.out_channels for u in ups] == [512, 256, 128, 64]
    assert all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in ups)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 18
    assert model.head.kernel_size == (1, 1) and model.head.out_channels == 1


@pytest.mark.parametrize("height, width", [(317, 479), (320, 480), (16, 16), (33, 17)])
def test_output_has_the_input_size(height, width):
    model = UNet(UNetConfig(base_channels=4)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, height, width)).shape == (2, 1, height, width)


@pytest.mark.parametrize("in_channels, num_classes, depth", [(1, 1, 4), (3, 4, 3), (2, 2, 1)])
def test_configurable_channels_classes_depth(in_channels, num_classes, depth):
    model = UNet(UNetConfig(in_channels=in_channels, num_classes=num_classes, base_channels=4, depth=depth))
    out = model(torch.randn(2, in_channels, 40, 24))
    assert out.shape == (2, num_classes, 40, 24)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_too_small_input_raises_a_helpful_error():
    with pytest.raises(ValueError, match="at least 16x16"):
        UNet(UNetConfig(base_channels=4))(torch.randn(1, 3, 15, 64))


def test_seed_model_costs_226_gflop_per_480x320_forward():
    from unetseg.model.flops import conv_flops

    model = UNet()
    assert round(conv_flops(model, (3, 320, 480)) / 1e9, 1) == 225.8
    assert model.training  # counting leaves the mode as it was
