"""flowprep.nn: conv1 cross-modality initialisation rules against hand-built tensors, and the conv swap."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO
from torch import nn

from flowprep.errors import ConfigError
from flowprep.nn import adapt_first_conv, flow_input_weights


def rgb_weight() -> torch.Tensor:
    """(2, 3, 1, 2): filter 0 has R, G, B = 1, 2, 6 (and 10, 20, 60); filter 1 has 0, 3, -3 (and 1, 1, 1)."""
    return torch.tensor([[[[1.0, 10.0]], [[2.0, 20.0]], [[6.0, 60.0]]],
                         [[[0.0, 1.0]], [[3.0, 1.0]], [[-3.0, 1.0]]]])


def test_tsn_rule_is_the_rgb_mean_in_every_channel_unscaled():
    weight = flow_input_weights(rgb_weight(), 10)
    assert weight.shape == (2, 10, 1, 2) and weight.is_contiguous()
    expected = torch.tensor([[[3.0, 30.0]], [[0.0, 1.0]]])  # (1 + 2 + 6) / 3, (10 + 20 + 60) / 3, ...
    assert torch.equal(weight, expected[:, None].expand(2, 10, 1, 2))
    assert flow_input_weights(rgb_weight(), 15).shape == (2, 15, 1, 2)  # RGB difference, L = 5


def test_symmetric_rule_pads_r_g_b_b_g_r():
    weight = flow_input_weights(rgb_weight(), 8, rule="symmetric")
    rgb = rgb_weight()
    order = [0, 1, 2, 2, 1, 0, 0, 1]  # R G B B G R R G
    assert torch.equal(weight, torch.stack([rgb[:, c] for c in order], dim=1))
    assert weight[0, :, 0, 0].tolist() == [1, 2, 6, 6, 2, 1, 1, 2]


def test_bad_rules_and_shapes_are_named():
    with pytest.raises(ConfigError, match="'timm'"):
        flow_input_weights(rgb_weight(), 10, rule="timm")
    with pytest.raises(ConfigError, match=r"\(2, 4, 1, 2\)"):
        flow_input_weights(torch.zeros(2, 4, 1, 2), 10)
    with pytest.raises(ConfigError, match="channels"):
        flow_input_weights(rgb_weight(), 0)


class TinyResNet(nn.Module):
    """torchvision ResNet's layout: conv1, bn1, relu, ..., with a later conv registered in a block."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.layer1(self.bn1(self.conv1(x))).mean(dim=(-2, -1)))


def test_adapt_first_conv_of_a_resnet_style_model():
    model = TinyResNet()
    old = model.conv1
    new = adapt_first_conv(model, 20)
    assert model.conv1 is new and new.in_channels == 20 and new.out_channels == 4
    assert (new.kernel_size, new.stride, new.padding, new.bias) == ((7, 7), (2, 2), (3, 3), None)
    assert torch.equal(new.weight, old.weight.mean(dim=1, keepdim=True).expand(4, 20, 7, 7))
    assert model(torch.zeros(2, 20, 32, 32)).shape == (2, 5)
    assert model.layer1[0].in_channels == 4  # only the first convolution changes


def test_adapt_first_conv_of_a_features_model_copies_the_bias():
    # VGG / BN-Inception style: features.0, with a bias; a first conv nested before a later top-level one.
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU()))
    model.add_module("head", nn.Conv2d(6, 2, 1))
    old = model.features[0]
    new = adapt_first_conv(model, 9, rule="symmetric")
    assert model.features[0] is new and model.head.in_channels == 6
    assert torch.equal(new.bias, old.bias)
    assert torch.equal(new.weight[:, 3], old.weight[:, 2]) and torch.equal(new.weight[:, 5], old.weight[:, 0])
    with pytest.raises(ConfigError, match="must take 3 RGB channels"):
        adapt_first_conv(model, 9)  # its first conv now takes 9
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        adapt_first_conv(nn.Sequential(nn.Linear(3, 3)), 10)


def test_importing_flowprep_nn_without_torch_names_the_extra():
    code = "import sys; sys.modules['torch'] = None\nimport flowprep.nn"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "MissingDependencyError" in result.stderr and "pip install 'flowprep[torch]'" in result.stderr
