import random

import numpy as np
import pytest
import torch

from optimum_subnet.algorithms.masks import overlap_fraction
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.search import SearchSpace
from optimum_subnet.core.spec import ModelShape

pytestmark = pytest.mark.unit

SHAPE = ModelShape(model_type="llama", hidden_size=256, num_layers=8, num_attention_heads=8, num_key_value_heads=2,
                   head_dim=32, intermediate_size=1024, vocab_size=500, tie_word_embeddings=True)


def _space(target=0.7, depth=False, **kw):
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(2, 32, generator=g) for _ in range(8)]
    mlp = [torch.rand(1024, generator=g) for _ in range(8)]
    kw.setdefault("mlp_multiple", 16)
    kw.setdefault("tolerance", 0.005)
    return SearchSpace(SHAPE, attention, mlp, target, depth_search=depth, min_depth=6, **kw)


@pytest.mark.parametrize("target", [0.9, 0.8, 0.7, 0.6, 0.5])
def test_initial_is_uniform_importance_top_and_in_budget(target):
    space = _space(target)
    genome = space.initial()
    assert space.within_budget(genome)
    widths = {g.mlp_width for g in genome}
    assert max(widths) - min(widths) <= 16 * 3  # uniform up to the budget repair's few steps
    for layer, gene in enumerate(genome):  # top by importance
        scores = space.mlp_scores[layer]
        threshold = min(scores[i] for i in gene.mlp)
        assert sum(s > threshold for s in scores) < gene.mlp_width


def test_widths_are_hardware_multiples():
    space = _space(0.7, head_dim_multiple=8, mlp_multiple=64)
    # head_dim 32: multiples of 8 leave four head sizes (the coarsest grid allowed)
    assert (space.head_dim_multiple, space.mlp_multiple) == (8, 64)
    assert all((2 * w) % 8 == 0 for w in space.attention_widths)
    # a multiple of 16 would leave two: 1/4 of a head (8) is used
    assert _space(0.7, head_dim_multiple=16).head_dim_multiple == 8
    assert all(w % 64 == 0 for w in space.mlp_widths)
    assert space.attention_widths[-1] == 16 and space.mlp_widths[-1] == 1024


@pytest.mark.parametrize("depth", [False, True])
def test_mutation_and_crossover_keep_budget_overlap_and_depth(depth):
    space = _space(0.6, depth=depth)
    rng = random.Random(0)
    initial = space.initial()
    population = [initial]
    for _ in range(60):
        child = space.mutate(rng.choice(population), rng, depth_prob=0.3, ratio_prob=0.2, mask_prob=0.5, overlap=0.8,
                             reference=initial)
        if child is not None:
            assert space.within_budget(child)
            assert sum(g is not None for g in child) >= space.min_depth
            population.append(child)
    assert len(population) > 30
    for _ in range(30):
        a, b = rng.sample(population, 2)
        child = space.crossover(a, b, rng)
        if child is not None:
            assert space.within_budget(child)
            assert sum(g is not None for g in child) >= space.min_depth
            for i, gene in enumerate(child):
                # a parent's block, or (after the budget repair) a parent's attention with another MLP width
                parents = [p for p in (a[i], b[i]) if p is not None]
                assert gene is None or gene in parents or any(
                    np.array_equal(gene.attention, p.attention) for p in parents)
    if depth:
        assert any(sum(g is None for g in genome) for genome in population)


def test_mask_mutation_keeps_overlap_when_width_is_unchanged():
    space = _space(0.8)
    rng = random.Random(3)
    parent = space.initial()
    child = space.mutate(parent, rng, depth_prob=0, ratio_prob=0, mask_prob=1.0, overlap=0.8)
    assert child is not None
    for p, c in zip(parent, child):
        if p.mlp_width == c.mlp_width:
            assert overlap_fraction(p.mlp, c.mlp) >= 0.8 - 1e-9


def test_genome_spec_round_trip():
    space = _space(0.6, depth=True)
    rng = random.Random(1)
    genome = space.mutate(space.initial(), rng, depth_prob=1.0, ratio_prob=0.3, mask_prob=0.5, overlap=0.8)
    spec = space.to_spec(genome).validate()
    assert space.from_spec(spec) == genome
    assert spec.params() == space.params(genome)
    for layer in spec.layers:  # RoPE pairs
        for channels in layer.attention_channels:
            assert sorted(c + 16 for c in channels if c < 16) == [c for c in channels if c >= 16]


def test_unreachable_ratio_is_refused():
    with pytest.raises(SubnetError, match="unreachable"):
        _space(0.05)
    with pytest.raises(SubnetError, match="unreachable in this search space"):
        _space(0.3, attention_range=(0.9, 1.0), mlp_range=(0.9, 1.0))
    with pytest.raises(SubnetError, match="target ratio must be in"):
        _space(1.5)


def test_layer_shared_masks_keep_one_rotary_set_per_layer():
    space = _space(0.6, depth=True, mask_sharing="layer")
    rng = random.Random(5)
    genome = space.initial()
    for _ in range(40):
        child = space.mutate(genome, rng, depth_prob=0.2, ratio_prob=0.3, mask_prob=0.6, overlap=0.8)
        if child is not None:
            genome = child
            for gene in genome:
                if gene is not None:
                    assert (gene.attention == gene.attention[0]).all()
    spec = space.to_spec(genome)
    assert all(len({tuple(c) for c in layer.attention_channels}) == 1 for layer in spec.layers)
    with pytest.raises(SubnetError, match="mask sharing"):
        _space(0.6, mask_sharing="head")


def _qk_norm_space(target=0.8, **kw):
    import dataclasses

    g = torch.Generator().manual_seed(0)
    shape = dataclasses.replace(SHAPE, qk_norm=True)
    return SearchSpace(shape, [torch.rand(2, 32, generator=g) for _ in range(8)],
                       [torch.rand(1024, generator=g) for _ in range(8)], target, mlp_multiple=16, tolerance=0.005,
                       **kw)


def test_q_k_norm_families_leave_attention_whole_by_default():
    space = _qk_norm_space()
    assert space.attention_pruning == "none" and space.describe()["attention_pruning"] == "none"
    assert space.attention_widths == [space.attention_universe]  # every head keeps all its channels
    rng = random.Random(0)
    genome = space.initial()
    for _ in range(20):  # no mutation or crossover prunes attention
        genome = space.mutate(genome, rng, depth_prob=0.5, ratio_prob=0.5, mask_prob=0.5, overlap=0.8) or genome
        assert all(len(head) == space.attention_universe for gene in genome if gene for head in gene.attention)
    assert space.within_budget(genome)
    # the paper's in-head space on request, or when an attention range is given
    # (a range wide enough for the width grid: 32-channel heads step by 8 channels, so 0.8 keeps them whole)
    assert _qk_norm_space(attention_pruning="in_head", attention_range=(0.5, 1.0)).attention_widths[0] \
        < space.attention_universe
    assert _qk_norm_space(attention_range=(0.5, 1.0)).attention_pruning == "in_head"
    assert _space().attention_pruning == "in_head"  # families without q/k norms: in-head by default
    assert _space(attention_pruning="none").attention_widths == [_space().attention_universe]


def test_attention_pruning_choices_are_checked():
    from optimum_subnet import SubnetConfig

    with pytest.raises(SubnetError, match="takes no search.attention_range"):
        _qk_norm_space(attention_pruning="none", attention_range=(0.5, 1.0))
    with pytest.raises(SubnetError, match="attention_pruning must be one of"):
        _space(attention_pruning="heads")
    with pytest.raises(SubnetError, match="attention_pruning must be one of"):
        SubnetConfig.from_dict({"search": {"attention_pruning": "heads"}})
    with pytest.raises(SubnetError, match="takes no search.attention_range"):
        SubnetConfig.preset("fast", 0.8, search__attention_pruning="none", search__attention_range=[0.5, 1.0])
    with pytest.raises(SubnetError, match=r'search.attention_pruning = "in_head"'):  # the way out, named
        _qk_norm_space(0.2)


def test_the_cli_names_its_attention_pruning_flag():
    from optimum.commands.subnet.common import cli_terms
    from optimum_subnet.core.config import ATTENTION_WHOLE_TAKES_NO_RANGE

    assert cli_terms(ATTENTION_WHOLE_TAKES_NO_RANGE).startswith("--attention-pruning none leaves attention whole")
    assert "(--attention-pruning in_head)" in cli_terms('prune attention inside heads (search.attention_pruning = '
                                                        '"in_head"), widen')
