"""One streaming, block-by-block calibration driver that every method shares."""

from .driver import BlockwiseRunner
from .statistics import GramAccumulator, MomentAccumulator, record_inputs

__all__ = ["BlockwiseRunner", "GramAccumulator", "MomentAccumulator", "record_inputs"]
