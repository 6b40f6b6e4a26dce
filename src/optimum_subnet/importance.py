"""Importance pass: one calibration sweep over the dense model that scores every channel.

Scores follow Shen et al. 2024, Eq. 2-4 (see :mod:`.algorithms.importance`); the sweep uses the
shared block-by-block driver, so only one block's Gram matrices exist at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .algorithms import importance as math
from .calibration import BlockwiseRunner, GramAccumulator, record_inputs

logger = logging.getLogger(__name__)


@dataclass
class ImportanceScores:
    """Per dense layer: attention scores (num_kv_heads x head_dim) and MLP scores (intermediate)."""

    attention: list[torch.Tensor]
    mlp: list[torch.Tensor]

    def attention_pairs(self, layer: int) -> torch.Tensor:
        """RoPE-pair scores (num_kv_heads x head_dim/2)."""
        return math.rope_pair_scores(self.attention[layer])


def layer_importance(adapter, layer, grams: dict[str, GramAccumulator], shape, damp: float):
    linears = adapter.linears(layer)
    # One damped inverse per activation site (W_Q, W_K, W_V share theirs; so do W_gate and W_up).
    inverse = {site: math.damped_inverse_diagonal(gram.mean, damp) for site, gram in grams.items()}
    phi = {
        role: math.saliency_from_inverse_diagonal(linears[role].weight.detach(), inverse[site])
        for role, site in (("q", "attn_in"), ("k", "attn_in"), ("v", "attn_in"), ("o", "attn_out"),
                           ("gate", "mlp_in"), ("up", "mlp_in"), ("down", "mlp_out"))
    }
    attention = math.attention_channel_scores(
        math.row_scores(phi["q"]), math.row_scores(phi["k"]), math.row_scores(phi["v"]),
        math.column_scores(phi["o"]), shape.num_key_value_heads, shape.head_dim,
    )
    mlp = math.mlp_channel_scores(math.row_scores(phi["gate"]), math.row_scores(phi["up"]),
                                  math.column_scores(phi["down"]))
    return attention.cpu(), mlp.cpu()


@torch.no_grad()
def compute_importance(model, adapter, windows: torch.Tensor, batch_size: int, device, damp: float = 0.01,
                       progress=None) -> ImportanceScores:
    shape = adapter.shape(model.config)
    runner = BlockwiseRunner(model, adapter, windows, batch_size, device)
    states = runner.initial_states()
    attention, mlp = [], []
    for index, layer in enumerate(adapter.decoder_layers(model)):
        grams = {site: GramAccumulator(f"layer {index} {site} inputs") for site in adapter.site_modules(layer)}
        with runner.on_device(layer), record_inputs(adapter.site_modules(layer), lambda s, x: grams[s].add(x)):
            states = runner.run_layer(layer, states)
            a, m = layer_importance(adapter, layer, grams, shape, damp)
        attention.append(a)
        mlp.append(m)
        if progress is not None:
            progress.update(1)
    return ImportanceScores(attention=attention, mlp=mlp)
