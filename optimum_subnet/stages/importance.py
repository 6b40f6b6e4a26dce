"""Importance pass: one calibration sweep over the dense model that scores every channel.

Two metrics from the same sweep: OBS saliency (Shen et al. 2024, Eq. 2-4; :mod:`.algorithms.importance`)
and FLAP's fluctuation metric (:mod:`.algorithms.structured`). The sweep uses the shared
block-by-block driver, so only one block's Gram matrices and moments exist at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from optimum_subnet.algorithms import importance as math
from optimum_subnet.algorithms import structured
from optimum_subnet.calibration import BlockwiseRunner, GramAccumulator, MomentAccumulator, record_inputs

logger = logging.getLogger(__name__)


METRICS = ("fluctuation", "obs")


@dataclass
class ImportanceScores:
    """Per dense layer, two channel metrics from the same calibration sweep:

    * ``attention`` (num_kv_heads x head_dim) / ``mlp`` (intermediate): OBS saliency (Eq. 2-4, the paper);
    * ``attention_fluctuation`` (num_heads * head_dim) / ``mlp_fluctuation`` (intermediate): FLAP's
      weighted input-feature variance of W_O / W_down's input channels (An et al. 2024), which
      measured far better subnets on SmolLM2 (README, Method notes), so the search uses it by default.
    """

    attention: list[torch.Tensor]
    mlp: list[torch.Tensor]
    attention_fluctuation: list[torch.Tensor] | None = None
    mlp_fluctuation: list[torch.Tensor] | None = None

    def attention_pairs(self, layer: int) -> torch.Tensor:
        """RoPE-pair scores (num_kv_heads x head_dim/2)."""
        return math.rope_pair_scores(self.attention[layer])

    def for_search(self, metric: str, shape) -> tuple[list, list, list, list]:
        """``(attention, mlp, attention_allocation, mlp_allocation)`` for :class:`SearchSpace`: ranking
        scores per (KV head, channel) and per MLP channel, plus scores made comparable across layers
        and modules (standardized per layer, FLAP's Eq. 7) for the global initial allocation."""
        from optimum_subnet.algorithms import structured

        if metric not in METRICS:
            raise ValueError(f"unknown importance metric {metric!r}; use one of {', '.join(METRICS)}")
        if metric == "obs":
            allocation = [structured.standardize(a.flatten()).reshape(a.shape) for a in self.attention]
            return self.attention, self.mlp, allocation, [structured.standardize(m) for m in self.mlp]
        if self.attention_fluctuation is None:
            raise ValueError("these importance scores hold no fluctuation metric")
        group = lambda o: structured.group_attention_channels(  # noqa: E731
            o, shape.num_key_value_heads, shape.group_size, shape.head_dim, reduce="mean")
        # FLAP squares the attention metric and standardizes each layer's channels before grouping
        attention = [group(o.pow(2)) for o in self.attention_fluctuation]
        allocation = [group(structured.standardize(o.pow(2))) for o in self.attention_fluctuation]
        return attention, self.mlp_fluctuation, allocation, [structured.standardize(m) for m in self.mlp_fluctuation]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name in ("attention", "mlp", "attention_fluctuation", "mlp_fluctuation"):
            for i, t in enumerate(getattr(self, name) or []):
                tensors[f"{name}.{i}"] = t.contiguous()
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "ImportanceScores":
        layers = len([k for k in tensors if k.startswith("attention.")])

        def series(name):
            if f"{name}.0" not in tensors:
                return None
            return [tensors[f"{name}.{i}"] for i in range(layers)]

        return cls(attention=series("attention"), mlp=series("mlp"),
                   attention_fluctuation=series("attention_fluctuation"), mlp_fluctuation=series("mlp_fluctuation"))


def layer_importance(adapter, layer, grams: dict[str, GramAccumulator], shape, damp: float):
    linears = adapter.linears(layer)
    # One damped inverse per activation site (W_Q, W_K, W_V share theirs; so do W_gate and W_up).
    # from the running sums (the damping is relative, so diag((2 S + lambda I)^-1) * tokens is the same as from the
    # means): no float64 copy of each Gram for its mean beside the inverse's own
    inverse = {site: math.damped_inverse_diagonal(gram.summed(), damp) * gram.tokens for site, gram in grams.items()}
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
                       progress=None, streamer=None) -> ImportanceScores:
    """``streamer`` (a :class:`~optimum_subnet.calibration.offload.BlockStreamer`): the model's blocks
    live off the device and are streamed to it one at a time."""
    shape = adapter.shape(model.config)
    runner = BlockwiseRunner(model, adapter, windows, batch_size, device, streamer=streamer)
    states = runner.initial_states()
    attention, mlp, attention_fluctuation, mlp_fluctuation = [], [], [], []
    layers = adapter.decoder_layers(model)
    for index in runner.blocks([[layer] for layer in layers]):
        layer = layers[index]
        sites = adapter.site_modules(layer)
        grams = {site: GramAccumulator(f"layer {index} {site} inputs") for site in sites}
        moments = {site: MomentAccumulator(f"layer {index} {site} inputs") for site in ("attn_out", "mlp_out")}

        def record(site, x):
            grams[site].add(x)
            if site in moments:
                moments[site].add(x)

        with record_inputs(sites, record):
            states = runner.run_layer(layer, states)
            a, m = layer_importance(adapter, layer, grams, shape, damp)
            linears = adapter.linears(layer)
            attention_fluctuation.append(structured.fluctuation_scores(
                linears["o"].weight.detach(), moments["attn_out"].variance).cpu())
            mlp_fluctuation.append(structured.fluctuation_scores(
                linears["down"].weight.detach(), moments["mlp_out"].variance).cpu())
        attention.append(a)
        mlp.append(m)
        if progress is not None:
            progress.update(1)
    return ImportanceScores(attention=attention, mlp=mlp, attention_fluctuation=attention_fluctuation,
                            mlp_fluctuation=mlp_fluctuation)
