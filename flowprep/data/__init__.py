"""PyTorch datasets and flow-aware transforms (needs the torch extra: pip install 'flowprep[torch]')."""
from ..errors import require

require("torch", "torch", "flowprep.data (PyTorch datasets and transforms)")

from . import transforms  # noqa: E402
from .dataset import FlowStackDataset, TwoStreamDataset  # noqa: E402
from .sampling import segment_offsets, stack_indices  # noqa: E402

__all__ = ["FlowStackDataset", "TwoStreamDataset", "segment_offsets", "stack_indices", "transforms"]
