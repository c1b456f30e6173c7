"""PyTorch datasets, samplers, stackings and flow-aware transforms (needs the torch extra:
pip install 'flowprep[torch]')."""
from ..errors import require

require("torch", "torch", "flowprep.data (PyTorch datasets and transforms)")

from . import transforms  # noqa: E402
from .dataset import FlowStackDataset, TwoStreamDataset  # noqa: E402
from .sampling import (  # noqa: E402
    DenseSampler, FusionSampler, MMAction2Sampler, Sampler, SequenceSampler, TSNSampler, make_sampler,
    segment_offsets, stack_indices,
)
from .stacking import (  # noqa: E402
    BidirectionalStacking, FlowStacking, RGBDiffStacking, RGBStacking, Stacking, TrajectoryStacking, make_stacking,
)

__all__ = [
    "BidirectionalStacking", "DenseSampler", "FlowStackDataset", "FlowStacking", "FusionSampler", "MMAction2Sampler",
    "RGBDiffStacking", "RGBStacking", "Sampler", "SequenceSampler", "Stacking", "TSNSampler", "TrajectoryStacking",
    "TwoStreamDataset", "make_sampler", "make_stacking", "segment_offsets", "stack_indices", "transforms",
]
