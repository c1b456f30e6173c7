"""flowprep: video datasets -> optical-flow training data (quantized JPEGs) and PyTorch loaders."""
__version__ = "0.1.0"

from .config import DecodeConfig, ExtractConfig, FlowConfig, StoreConfig  # noqa: E402
from .errors import (  # noqa: E402
    BackendUnavailableError,
    ConfigError,
    DecodeError,
    FlowprepError,
    MissingDependencyError,
    OutputError,
)
from .flow import create_backend, list_backends  # noqa: E402
from .pipeline import extract_video  # noqa: E402
from .quantize import dequantize, quantization_error_bound, quantize  # noqa: E402
from .store import Naming, open_output  # noqa: E402

__all__ = [
    "BackendUnavailableError", "ConfigError", "DecodeConfig", "DecodeError", "ExtractConfig", "FlowConfig",
    "FlowprepError", "MissingDependencyError", "Naming", "OutputError", "StoreConfig", "create_backend",
    "dequantize", "extract_video", "list_backends", "open_output", "quantization_error_bound", "quantize",
]
