"""The benchmark scripts (``benchmarks/<name>.py``, not a package) as modules, for the tests that run them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` loaded as a module (the scripts put their folder on ``sys.path`` themselves
    where they import a neighbour)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
