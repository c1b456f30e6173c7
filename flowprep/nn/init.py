"""flow_input_weights and adapt_first_conv: conv1 weights of an RGB network for C input channels."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

RULES = ("tsn", "symmetric")
_SYMMETRIC = (0, 1, 2, 2, 1, 0)  # R, G, B, B, G, R: the period of Feichtenhofer's padding


def flow_input_weights(rgb_weight: torch.Tensor, channels: int, rule: str = "tsn") -> torch.Tensor:
    """A conv1 weight (C_out, 3, k_h, k_w) of an RGB network -> (C_out, channels, k_h, k_w) for `channels` inputs
    (2L for a flow stack, 3L for RGB differences), by `rule`: 'tsn' (the RGB mean in every channel) or
    'symmetric' (R, G, B, B, G, R, ...). Values are not rescaled; a new contiguous tensor, same dtype/device."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    if rgb_weight.dim() != 4 or rgb_weight.shape[1] != 3:
        raise ConfigError(f"rgb_weight must be a (C_out, 3, k, k) conv weight, got shape {tuple(rgb_weight.shape)}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ConfigError(f"channels must be an integer >= 1, got {channels!r}")
    weight = rgb_weight.detach()
    if rule == "tsn":
        shape = (weight.shape[0], channels, *weight.shape[2:])
        return weight.mean(dim=1, keepdim=True).expand(shape).contiguous()
    order = torch.tensor([_SYMMETRIC[c % len(_SYMMETRIC)] for c in range(channels)], device=weight.device)
    return weight.index_select(1, order).contiguous()


def adapt_first_conv(model: nn.Module, channels: int, rule: str = "tsn") -> nn.Conv2d:
    """Swap the first nn.Conv2d of `model` (in module order: torchvision's conv1 / features.0) for one taking
    `channels` inputs, its weight from flow_input_weights(old weight, channels, rule), bias copied, every other
    setting kept. The model is changed in place; returns the new convolution."""
    for qualified, module in model.named_modules():  # depth first, in registration order
        if isinstance(module, nn.Conv2d) and qualified:
            parent_name, _, name = qualified.rpartition(".")
            return _replace(model.get_submodule(parent_name), qualified, name, module, channels, rule)
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d child to adapt")


def _replace(parent: nn.Module, qualified: str, name: str, conv: nn.Conv2d, channels: int, rule: str
             ) -> nn.Conv2d:
    if conv.in_channels != 3 or conv.groups != 1:
        raise ConfigError(f"the first convolution ({qualified}: {conv}) must take 3 RGB channels without groups")
    weight = flow_input_weights(conv.weight, channels, rule)
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, name, new)
    return new
