"""The budget (all parameters or decoder blocks) and the width grid shared by the search and the baselines."""

import random

import pytest
import torch

from optimum_subnet.algorithms.budget import Budget, WidthGrid, allowed_widths
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import ModelShape
from optimum_subnet.search import SearchSpace
from optimum_subnet.stages.baselines import UnitLayout

pytestmark = pytest.mark.unit

# embeddings dominate, as in Gemma3-270M (an 8192-token vocabulary on a 64-wide model)
SHAPE = ModelShape(model_type="llama", hidden_size=64, num_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, intermediate_size=256, vocab_size=8192, tie_word_embeddings=True)


def test_budget_counts_all_parameters_or_the_blocks():
    dense, blocks, embeddings = SHAPE.dense_params(), SHAPE.dense_block_params(), SHAPE.embedding_params()
    assert embeddings / dense > 0.5
    all_params = Budget(SHAPE, 0.8)
    assert all_params.target_params == pytest.approx(0.8 * dense)
    assert all_params.ratio(all_params.target_params) == pytest.approx(0.8)
    over_blocks = Budget(SHAPE, 0.5, "blocks")
    assert over_blocks.target_params == pytest.approx(embeddings + 0.5 * blocks)
    assert over_blocks.block_target_ratio == pytest.approx(0.5)
    assert over_blocks.ratio(over_blocks.target_params) == pytest.approx(0.5)
    with pytest.raises(SubnetError, match="embeddings alone are .*over the decoder blocks instead"):
        Budget(SHAPE, 0.5)  # half of all parameters is less than the embeddings
    with pytest.raises(SubnetError, match="'all' parameters or the decoder 'blocks'"):
        Budget(SHAPE, 0.5, "layers")


@pytest.mark.parametrize("ratio", [0.9, 0.7, 0.5])
def test_search_space_and_baselines_meet_a_block_budget(ratio):
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(2, 16, generator=g) for _ in range(4)]
    mlp = [torch.rand(256, generator=g) for _ in range(4)]
    space = SearchSpace(SHAPE, attention, mlp, ratio, mlp_multiple=16, tolerance=0.01, ratio_of="blocks")
    for genome in (space.initial(), space.mutate(space.initial(), random.Random(1), depth_prob=0, ratio_prob=0.5,
                                                 mask_prob=0.5, overlap=0.8)):
        assert genome is not None and space.within_budget(genome)
        spec = space.to_spec(genome)
        assert abs(spec.block_ratio() - ratio) <= space.tolerance + 1e-12
        assert space.ratio(genome) == pytest.approx(spec.block_ratio())
    layout = UnitLayout(SHAPE, "pair", 8, 16, ratio_of="blocks")
    allocation = layout.uniform(ratio)
    assert abs(layout.block_params(allocation) / SHAPE.dense_block_params() - ratio) < 0.05


def test_width_grid_is_never_coarser_than_a_quarter_of_a_head_or_a_sixteenth_of_the_mlp():
    grid = WidthGrid(SHAPE, head_dim_multiple=64, mlp_multiple=1024)
    assert grid.head_dim_step == 4 and grid.attention_step == 2 and grid.mlp_step == 16
    assert allowed_widths(256, (0.5, 1.0), 16) == list(range(128, 257, 16))
    assert grid.snap_mlp(100) == 96 and grid.snap_attention(0.2) == 2  # never below one step
