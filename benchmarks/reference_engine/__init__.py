"""The search engine as it was on main at 58474c2 (before issue 15), frozen for before/after cost
measurements (``benchmarks/candidate_production.py``, ``benchmarks/search_cost.py --engines old,new``).

Copied unchanged except for its imports (its own masks / space / state modules; budget, rope, spec and
config come from the current library, whose interfaces it uses are unchanged). Its fitness interface
is one spec per call. Not part of the library: delete once the comparison is no longer wanted.
"""

from .evolution import EvolutionarySearch
from .space import SearchSpace

__all__ = ["EvolutionarySearch", "SearchSpace"]
