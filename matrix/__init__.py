"""rtx-matrix: a declarative build matrix for NVIDIA TensorRT-RTX engines."""

import time as _time

__version__ = "0.1.0"

IMPORTED_AT_NS = _time.time_ns()
"""When this process began reading rtx-matrix's code: `matrix.pickle_cache` trusts only code
files that were not modified since (nor just before, see `matrix.file_stat`)."""
