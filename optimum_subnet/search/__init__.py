"""Training-free evolutionary search over per-layer widths, masks and depth."""

from optimum_subnet.search.evolution import EvolutionarySearch, EvolutionSettings, SearchResult
from optimum_subnet.search.space import Genome, LayerGene, SearchSpace, paper_ranges

__all__ = [
    "EvolutionSettings",
    "EvolutionarySearch",
    "Genome",
    "LayerGene",
    "SearchResult",
    "SearchSpace",
    "paper_ranges",
]
