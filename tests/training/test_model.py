import pytest
import torch

from training.model import WideResNet, count_parameters


def test_wrn_28_10_has_the_published_parameter_count():
    assert count_parameters(WideResNet(28, 10)) == 36_479_194


@pytest.mark.parametrize(("depth", "width"), [(10, 1), (16, 2)])
def test_forward_shape(depth, width):
    model = WideResNet(depth, width).eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(12, 2)


def test_reference_weights_load_strictly(reference_weights):
    from training.checkpoint import load_model

    model = load_model(reference_weights)
    assert count_parameters(model) == 36_479_194


def test_parameter_names_follow_the_reference_layout():
    names = set(WideResNet(28, 10).state_dict())
    for key in (
        "conv.weight",
        "blocks.0.shortcut.weight",
        "blocks.4.conv1.weight",
        "blocks.11.bn2.running_var",
        "bn.weight",
        "fc.bias",
    ):
        assert key in names
    assert "blocks.1.shortcut.weight" not in names
