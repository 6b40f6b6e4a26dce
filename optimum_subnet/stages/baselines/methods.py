"""Training-free structured-pruning baselines as strategies of the same pass.

Each baseline scores the input channels of W_O and W_down of every layer (pure math in
:mod:`optimum_subnet.algorithms.structured`), keeps the best units under the shared budget
(:mod:`.layout`), and hands back a :class:`~optimum_subnet.core.spec.SubnetSpec` (plus FLAP's bias
terms). Surgery, evaluation and saving are the ones the search uses, so every method produces the
same kind of folder and is compared on the same data, budget and parameter accounting.

============  =====================================================  ==========  ==========  ======
method        score of input channel j                               structure   statistics  bias
============  =====================================================  ==========  ==========  ======
flap          Var(x_j) ||W_:,j||^2 (attention: squared), per-layer   global      dense       yes
              standardized (An et al., AAAI 2024)
wanda-sp      mean_i |W_ij| sqrt(E x_j^2) (Sun et al., ICLR 2024;    uniform     sequential  no
              structured as in An et al. 2024)
magnitude     ||W_:,j||_2                                            uniform     none        no
random        uniform random (seeded)                                uniform     none        no
============  =====================================================  ==========  ==========  ======

"dense" statistics are recorded on the unpruned model (FLAP's code); "sequential" ones on the
outputs of the already pruned upstream layers (Wanda-sp's code; with a global structure, which needs
every layer's scores before any layer is pruned, they fall back to dense).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from optimum_subnet.algorithms import structured
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.baselines.layout import Allocation, UnitLayout, build_spec

logger = logging.getLogger(__name__)


@dataclass
class BaselineResult:
    spec: SubnetSpec
    #: per *source* layer index: {"o": bias (hidden,), "down": bias (hidden,)} (FLAP's compensation)
    biases: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def apply_biases(self, subnet, adapter) -> None:
        """Write the compensation biases into the extracted subnet's W_O / W_down."""
        for new_index, layer_spec in enumerate(self.spec.layers):
            biases = self.biases.get(layer_spec.source_index)
            if not biases:
                continue
            linears = adapter.linears(adapter.decoder_layers(subnet)[new_index])
            for role, bias in biases.items():
                target = linears[role].bias
                if target is None:  # a bug: the spec's bias flags make surgery create the bias
                    raise RuntimeError(f"subnet layer {new_index} has no {role} bias to compensate into")
                target.copy_(bias.to(target.dtype))


def _standardized(layer_scores) -> list[torch.Tensor]:
    """Each layer's scores standardized on their own, so one global threshold compares layers (FLAP's rule)."""
    return [structured.standardize(s) for s in layer_scores]


class StructuredBaseline(ABC):
    name: ClassVar[str]
    reference: ClassVar[str]
    default_structure: ClassVar[str] = "uniform"  # or "global"
    default_bias: ClassVar[bool] = False
    #: "dense", "sequential" or "none" (no calibration data needed)
    statistics: ClassVar[str] = "dense"

    @abstractmethod
    def channel_scores(self, layer, adapter, moments: dict | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores of W_O's input channels (num_heads * head_dim,) and W_down's (intermediate,)."""

    def transform(self, o_scores: list[torch.Tensor], down_scores: list[torch.Tensor]):
        """Make scores comparable across layers and modules for a global threshold (identity by default)."""
        return o_scores, down_scores

    # ------------------------------------------------------------------------------------- run
    @torch.no_grad()
    def prune(self, model, adapter, windows: torch.Tensor | None, *, target_ratio: float, batch_size: int,
              device, attention_unit: str = "head", structure: str | None = None, bias: bool | None = None,
              head_dim_multiple: int = 8, mlp_multiple: int = 64, seed: int = 0, ratio_of: str = "all",
              progress=None) -> BaselineResult:
        from optimum_subnet.calibration import BlockwiseRunner, MomentAccumulator, record_inputs

        start = time.perf_counter()
        structure = structure or self.default_structure
        bias = self.default_bias if bias is None else bias
        if structure not in ("uniform", "global"):
            raise SubnetError(f"baseline structure must be uniform or global, got {structure!r}")
        if bias and self.statistics == "none":
            raise SubnetError(f"{self.name} records no activations, so it has no mean inputs to compensate with")
        # a global structure needs every layer's scores before any layer is pruned: dense statistics
        statistics = "dense" if (self.statistics == "sequential" and structure == "global") else self.statistics
        shape = adapter.shape(model.config)
        layout = UnitLayout(shape, attention_unit, head_dim_multiple, mlp_multiple, attention_out_bias=bias,
                            mlp_out_bias=bias, ratio_of=ratio_of)
        allocation = layout.uniform(target_ratio) if structure == "uniform" else None
        if structure == "global":
            layout.check_reachable(target_ratio)
        layers = adapter.decoder_layers(model)
        o_scores, down_scores, means = [], [], []
        runner = states = None
        if statistics != "none":
            if windows is None:
                raise SubnetError(f"{self.name} needs calibration data")
            runner = BlockwiseRunner(model, adapter, windows, batch_size, device)
            states = runner.initial_states()
        for index, layer in enumerate(layers):
            moments = None
            if runner is not None:
                sites = adapter.site_modules(layer)
                moments = {site: MomentAccumulator(f"layer {index} {site} inputs") for site in ("attn_out", "mlp_out")}
                with runner.on_device(layer), record_inputs({s: sites[s] for s in moments},
                                                            lambda s, x: moments[s].add(x)):
                    dense_out = runner.run_layer(layer, states)
                means.append({site: m.mean for site, m in moments.items()})
            o, down = self.channel_scores(layer, adapter, moments, seed + index)
            o_scores.append(o.cpu())
            down_scores.append(down.cpu())
            if runner is not None:
                if statistics == "sequential":
                    layer_spec = layout.layer_spec(index, self._kv_scores(o_scores[-1], shape), down_scores[-1],
                                                   allocation.attention[index], allocation.mlp[index])
                    with runner.on_device(layer):
                        states = runner.run_layer(_masked_layer(layer, adapter, layer_spec, shape), states)
                else:
                    states = dense_out
            if progress is not None:
                progress.update(1)
        if structure == "global":
            o_global, down_global = self.transform(o_scores, down_scores)
            kv = [self._kv_scores(o, shape) for o in o_global]
            allocation, threshold = layout.global_threshold([layout.attention_width_scores(k) for k in kv],
                                                            down_global, target_ratio)
            attention_scores, mlp_scores = kv, down_global
        else:
            threshold = None
            attention_scores = [self._kv_scores(o, shape) for o in o_scores]
            mlp_scores = down_scores
        spec = build_spec(layout, allocation, attention_scores, mlp_scores,
                          metadata={"method": self.name})
        biases = {}
        if bias:
            for layer_spec in spec.layers:
                i = layer_spec.source_index
                kept = adapter.kept_rows(layer_spec, shape)
                linears = adapter.linears(layers[i])
                biases[i] = {
                    "o": structured.bias_compensation(linears["o"].weight.detach(), means[i]["attn_out"], kept["o"]),
                    "down": structured.bias_compensation(linears["down"].weight.detach(), means[i]["mlp_out"],
                                                         kept["down"]),
                }
        details = {
            "method": self.name, "reference": self.reference, "structure": structure,
            "attention_unit": attention_unit, "statistics": statistics, "bias_compensation": bias,
            "threshold": threshold, "attention_units": allocation.attention, "mlp_widths": allocation.mlp,
            "seconds": time.perf_counter() - start,
        }
        logger.info("%s: kept ratio %.4f (%s structure, %s attention units)", self.name, spec.inheriting_ratio(),
                    structure, attention_unit)
        return BaselineResult(spec=spec, biases=biases, details=details)

    @staticmethod
    def _kv_scores(o_scores: torch.Tensor, shape) -> torch.Tensor:
        return structured.group_attention_channels(o_scores, shape.num_key_value_heads, shape.group_size,
                                                   shape.head_dim, reduce="mean")


def _masked_layer(layer, adapter, layer_spec, shape):
    """A copy of ``layer`` with its pruned rows / columns zeroed: runs like the pruned layer (tested in
    ``test_modeling``), so its outputs feed the next layer's statistics (sequential)."""
    import copy

    from optimum_subnet.stages.surgery import mask_layer

    masked = copy.deepcopy(layer)
    mask_layer(masked, adapter, layer_spec, shape)
    return masked


class FLAP(StructuredBaseline):
    name = "flap"
    reference = "An et al., Fluctuation-based Adaptive Structured Pruning for Large Language Models, AAAI 2024"
    default_structure = "global"
    default_bias = True
    statistics = "dense"

    def channel_scores(self, layer, adapter, moments, seed):
        linears = adapter.linears(layer)
        o = structured.fluctuation_scores(linears["o"].weight.detach(), moments["attn_out"].variance)
        down = structured.fluctuation_scores(linears["down"].weight.detach(), moments["mlp_out"].variance)
        return o, down

    def transform(self, o_scores, down_scores):
        # FLAP's code squares the attention metric, then standardizes each layer's scores per module
        return _standardized(s.pow(2) for s in o_scores), _standardized(down_scores)


class WandaSP(StructuredBaseline):
    name = "wanda-sp"
    reference = ("Sun et al., A Simple and Effective Pruning Approach for Large Language Models, ICLR 2024; "
                 "structured variant of An et al. 2024")
    statistics = "sequential"

    def channel_scores(self, layer, adapter, moments, seed):
        linears = adapter.linears(layer)
        o = structured.wanda_sp_scores(linears["o"].weight.detach(), moments["attn_out"].mean_square)
        down = structured.wanda_sp_scores(linears["down"].weight.detach(), moments["mlp_out"].mean_square)
        return o, down

    def transform(self, o_scores, down_scores):
        return _standardized(o_scores), _standardized(down_scores)


class MagnitudeSP(StructuredBaseline):
    name = "magnitude"
    reference = "structured magnitude pruning (column L2 norm of W_O / W_down), a sanity floor"
    statistics = "none"

    def channel_scores(self, layer, adapter, moments, seed):
        linears = adapter.linears(layer)
        return (structured.magnitude_scores(linears["o"].weight.detach()),
                structured.magnitude_scores(linears["down"].weight.detach()))

    def transform(self, o_scores, down_scores):
        return _standardized(o_scores), _standardized(down_scores)


class RandomSP(StructuredBaseline):
    name = "random"
    reference = "uniform-random structured pruning (seeded), a sanity floor"
    statistics = "none"

    def channel_scores(self, layer, adapter, moments, seed):
        linears = adapter.linears(layer)
        generator = torch.Generator().manual_seed(seed)
        return (torch.rand(linears["o"].weight.shape[1], generator=generator, dtype=torch.float64),
                torch.rand(linears["down"].weight.shape[1], generator=generator, dtype=torch.float64))


BASELINES: dict[str, type[StructuredBaseline]] = {cls.name: cls for cls in (FLAP, WandaSP, MagnitudeSP, RandomSP)}
METHODS = ("ours",) + tuple(BASELINES)


def get_baseline(name: str) -> StructuredBaseline:
    try:
        return BASELINES[name]()
    except KeyError:
        raise SubnetError(f"unknown method {name!r}; use one of {', '.join(METHODS)}") from None
