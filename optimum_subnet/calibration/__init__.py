"""One streaming, block-by-block calibration driver that every method shares."""

from optimum_subnet.calibration.driver import BlockwiseRunner
from optimum_subnet.calibration.statistics import GramAccumulator, MomentAccumulator, record_inputs

__all__ = ["BlockwiseRunner", "GramAccumulator", "MomentAccumulator", "record_inputs"]
