"""rtx-matrix: a declarative build matrix for NVIDIA TensorRT-RTX engines."""

__version__ = "0.1.0"
