"""Cross-modality initialisation of a network's first convolution (needs the torch extra:
pip install 'flowprep[torch]').

An ImageNet RGB network's conv1 weight (C_out, 3, k, k) becomes one for C input channels (2L for flow stacks,
3L for RGB differences):

- rule="tsn" (TSN, tsn-pytorch's _construct_flow_model / _construct_diff_model): the mean over the 3 RGB
  channels, replicated to every input channel; no rescaling; the bias is copied.
- rule="symmetric" (Feichtenhofer et al.'s code for ResNets): the RGB filters padded symmetrically,
  R, G, B, B, G, R, R, G, B, ... (channel c takes RGB channel (0, 1, 2, 2, 1, 0)[c % 6]); no rescaling.

mmaction2 leaves such a conv1 random; timm's adapt_input_conv repeats R, G, B cyclically and scales by 3 / C,
a third rule not offered here.
"""
from ..errors import require

require("torch", "torch", "flowprep.nn (cross-modality initialisation)")

from .init import RULES, adapt_first_conv, flow_input_weights  # noqa: E402

__all__ = ["RULES", "adapt_first_conv", "flow_input_weights"]
