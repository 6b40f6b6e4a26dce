"""Calibration and evaluation data: built-in Wikipedia extract, local files, HF datasets."""

from optimum_subnet.data.sources import BUILTIN_ALIASES, describe, load_texts
from optimum_subnet.data.windows import (bos_of, calibration_starts, calibration_windows, check_sequence_length,
                                         disjoint_starts, evaluation_windows, tokenize_stream, windows_at)

__all__ = [
    "BUILTIN_ALIASES",
    "bos_of",
    "calibration_starts",
    "calibration_windows",
    "disjoint_starts",
    "windows_at",
    "check_sequence_length",
    "describe",
    "evaluation_windows",
    "load_texts",
    "tokenize_stream",
]
