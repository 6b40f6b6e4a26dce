"""Structured-pruning baselines (FLAP, Wanda-sp, magnitude, random) as strategies of the same pass."""

from optimum_subnet.stages.baselines.layout import ATTENTION_UNITS, Allocation, UnitLayout, build_spec
from optimum_subnet.stages.baselines.methods import BASELINES, METHODS, FLAP, BaselineResult, MagnitudeSP, RandomSP, StructuredBaseline, WandaSP, get_baseline

__all__ = [
    "ATTENTION_UNITS",
    "Allocation",
    "BASELINES",
    "BaselineResult",
    "FLAP",
    "METHODS",
    "MagnitudeSP",
    "RandomSP",
    "StructuredBaseline",
    "UnitLayout",
    "WandaSP",
    "build_spec",
    "get_baseline",
]
