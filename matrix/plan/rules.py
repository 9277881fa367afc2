"""The rules table: what TensorRT-RTX accepts, as data, one table per library release.

Every number here was measured with the real library (docs/tensorrt-rtx.md) and is re-checked by
tests/plan/test_rules_vs_builder.py, which builds small models for each CC and compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from matrix.errors import MatrixError
from matrix.facts.types import BF16, FP4, FP8, INT4
from matrix.plan.capabilities import CC, KNOWN, SM75, SM80, SM86, SM89, SM120, SM121

# Rule ids: stable strings shown in `plan` and its JSON, so users can grep for them.
DTYPE_NEEDS = "dtype-needs-cc"
CURRENT_ALONE = "current-alone"
CURRENT_NEEDS_GPU = "current-needs-gpu"
WEIGHTLESS_NEEDS_GPU = "weightless-needs-gpu"
WEIGHTLESS_ONE_CC = "weightless-one-cc"
TURING_MIXED = "turing-mixed"
TURING_FP32_GEMM = "turing-fp32-gemm"
DYNAMIC_NEEDS_PROFILE = "dynamic-needs-profile"
SHAPE_INPUT_NEEDS_VALUES = "shape-input-needs-values"
PROFILE_SHARED_DIMS = "profile-shared-dims"
DEFAULT_NARROWED = "default-narrowed"
EXCLUDED = "excluded"


@dataclass(frozen=True)
class RuleSet:
    tensorrt_rtx: str
    """The `major.minor` release these rules were measured on."""
    known: tuple[CC, ...]
    """CCs the builder accepts as explicit targets."""
    default_targets: tuple[CC, ...]
    """What an engine built with no CC set runs on (besides newer GPUs)."""
    dtype_min_cc: Mapping[str, CC]
    """Element types that need at least this CC; anything else runs on every known CC."""
    dtype_labels: Mapping[str, str]
    fp32_gemm_refused: tuple[CC, ...]
    """CCs whose builder refuses a float32 MatMul/Gemm ("FP32 GEMM is not supported")."""
    fast_only_when_alone: tuple[CC, ...]
    """CCs that, mixed with others, give an engine not guaranteed fast on the others."""
    weightless_max_ccs: int = 1
    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


RULES_1_7 = RuleSet(
    tensorrt_rtx="1.7",
    known=KNOWN,
    default_targets=(SM80, SM86, SM89, SM120, SM121),
    dtype_min_cc=MappingProxyType({FP4: SM120, FP8: SM89, BF16: SM80, INT4: SM80}),
    dtype_labels=MappingProxyType({FP4: "FP4", FP8: "FP8", BF16: "BF16", INT4: "INT4"}),
    fp32_gemm_refused=(SM75,),
    fast_only_when_alone=(SM75,),
)

TABLES: Mapping[str, RuleSet] = MappingProxyType({"1.7": RULES_1_7})


def rules_for(tensorrt_rtx_version: str) -> RuleSet:
    """The table for an installed library version such as `1.7.1.116`."""
    release = ".".join(tensorrt_rtx_version.split(".")[:2])
    try:
        return TABLES[release]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise MatrixError(
            f"no rules table for TensorRT-RTX {tensorrt_rtx_version} (this rtx-matrix knows "
            f"{known}); install a matching tensorrt-rtx or upgrade rtx-matrix"
        ) from None
