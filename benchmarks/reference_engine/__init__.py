"""The search engine as it was on main at 58474c2 (before issue 15), frozen for before/after cost
measurements (``benchmarks/candidate_production.py``, ``benchmarks/search_cost.py --engines old,new``).

Copied unchanged except for its imports (its own masks / space / state modules; budget, rope, spec and
config come from the current library, whose interfaces it uses are unchanged). Its fitness interface
is one spec per call. Not part of the library: delete once the comparison is no longer wanted.
"""

from .evolution import EvolutionarySearch
from .space import SearchSpace


def search_space(shape, config, attention_scores, mlp_scores, attention_allocation=None, mlp_allocation=None):
    """This engine's :class:`SearchSpace` for a ``SubnetConfig``, as ``optimum_subnet.pipeline.stages.search_space``
    builds today's (the same settings; it has no whole-KV-head search and no attention-pruning choice)."""
    s = config.search
    return SearchSpace(
        shape, attention_scores, mlp_scores, config.target_ratio, attention_range=s.attention_range,
        mlp_range=s.mlp_range, head_dim_multiple=s.head_dim_multiple, mlp_multiple=s.mlp_multiple,
        depth_search=s.depth_search == "on" or (s.depth_search == "auto" and config.target_ratio <= 0.7),
        min_depth=round(s.min_depth_ratio * shape.num_layers), tolerance=s.ratio_tolerance, mask_fill=s.mask_fill,
        mask_sharing=s.attention_mask_sharing, attention_allocation=attention_allocation,
        mlp_allocation=mlp_allocation, out_bias=config.reformation_bias, ratio_of=config.ratio_of)


__all__ = ["EvolutionarySearch", "SearchSpace", "search_space"]
