"""Reformation pass: rectify the inherited weights with the omitted ones (Shen et al. 2024, Sec. 3.4).

Layer by layer, on the activations produced by the *already reformed* upstream subnet layers:

1. attention: the dense layer's W_O input ``X`` (all channels) and the subnet's W_O input ``X_S'``
   are recorded on the same input hidden states; the subnet's W_O is replaced by the least-squares
   fit of ``W_O X`` (closed form or ADMM, :mod:`.algorithms.least_squares`);
2. MLP: with the reformed attention in place, the same for W_down;
3. the subnet layer's outputs become the next layer's inputs.

Only one layer pair's statistics are alive at a time (block-by-block driver).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from .algorithms import least_squares as ls
from .calibration import BlockwiseRunner, GramAccumulator, record_inputs

logger = logging.getLogger(__name__)

METHODS = ("closed_form", "admm", "none")


@dataclass
class SiteStatistics:
    """Second moments of one column-pruned projection's inputs: dense ``X``, subnet ``X_S'``."""

    dense: GramAccumulator = field(default_factory=lambda: GramAccumulator("dense inputs"))
    cross: GramAccumulator = field(default_factory=lambda: GramAccumulator("dense x subnet inputs"))
    subnet: GramAccumulator = field(default_factory=lambda: GramAccumulator("subnet inputs"))

    def add(self, dense_x: torch.Tensor, subnet_x: torch.Tensor) -> None:
        self.dense.add(dense_x)
        self.cross.add(dense_x, subnet_x)
        self.subnet.add(subnet_x)


def output_error(weight, new_weight, stats: SiteStatistics) -> float:
    """``||W_hat X_S' - W X|| / ||W X||`` from the recorded second moments."""
    w = weight.to(torch.float64)
    v = new_weight.to(torch.float64)
    h, c, hs = stats.dense.mean, stats.cross.mean, stats.subnet.mean
    ref = torch.einsum("ij,jk,ik->", w, h, w)
    err = ref - 2 * torch.einsum("ij,jk,ik->", w, c, v) + torch.einsum("ij,jk,ik->", v, hs, v)
    return float((err.clamp_min(0) / ref.clamp_min(1e-30)).sqrt())


def solve(method: str, weight: torch.Tensor, kept: torch.Tensor, stats: SiteStatistics, *, damp: float,
          rho: float, iterations: int) -> torch.Tensor:
    kept = kept.to(weight.device)
    if method == "closed_form":
        return ls.closed_form(weight, stats.cross.mean.to(weight.device), stats.subnet.mean.to(weight.device), damp)
    if method == "admm":
        return ls.admm(weight, stats.dense.mean.to(weight.device), kept, rho=rho, iterations=iterations)
    raise ValueError(f"unknown reformation method {method!r}; use one of {', '.join(METHODS)}")


@dataclass
class ReformationResult:
    method: str
    seconds: float
    layers: list[dict]

    def mean_error(self, key: str) -> float:
        values = [layer[key] for layer in self.layers if key in layer]
        return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def reform(dense, subnet, spec, adapter, windows: torch.Tensor, batch_size: int, device, method: str = "closed_form",
           damp: float = 1e-2, rho: float = 1.0, iterations: int = 30, progress=None) -> ReformationResult:
    """Rectify ``subnet``'s W_O and W_down in place; returns per-layer output errors before/after."""
    if method not in METHODS:
        raise ValueError(f"unknown reformation method {method!r}; use one of {', '.join(METHODS)}")
    start = time.perf_counter()
    shape = spec.shape
    runner = BlockwiseRunner(subnet, adapter, windows, batch_size, device)
    states = runner.initial_states()
    dense_layers = adapter.decoder_layers(dense)
    subnet_layers = adapter.decoder_layers(subnet)
    report = []
    for index, layer_spec in enumerate(spec.layers):
        dense_layer, sub_layer = dense_layers[layer_spec.source_index], subnet_layers[index]
        kept = adapter.kept_rows(layer_spec, shape)
        entry = {"layer": index, "source_layer": layer_spec.source_index}
        with runner.on_device(dense_layer, sub_layer):
            if method != "none":
                # --- attention output projection ---------------------------------------------------
                stats = SiteStatistics()
                for hidden in states:
                    kwargs = runner.call_kwargs(hidden)
                    captured = {}
                    with record_inputs({"dense": adapter.site_modules(dense_layer)["attn_out"],
                                        "subnet": adapter.site_modules(sub_layer)["attn_out"]},
                                       lambda s, x: captured.__setitem__(s, x)):
                        adapter.attention_sublayer(dense_layer, hidden, kwargs)
                        adapter.attention_sublayer(sub_layer, hidden, kwargs)
                    stats.add(captured["dense"], captured["subnet"])
                _rectify(adapter.linears(dense_layer)["o"], adapter.linears(sub_layer)["o"], kept["o"], stats,
                         method, damp, rho, iterations, entry, "attention")
                # --- MLP down projection (after the reformed attention) ------------------------------
                stats = SiteStatistics()
                for hidden in states:
                    kwargs = runner.call_kwargs(hidden)
                    mlp_in = adapter.mlp_input(sub_layer, adapter.attention_sublayer(sub_layer, hidden, kwargs))
                    captured = {}
                    with record_inputs({"dense": adapter.site_modules(dense_layer)["mlp_out"],
                                        "subnet": adapter.site_modules(sub_layer)["mlp_out"]},
                                       lambda s, x: captured.__setitem__(s, x)):
                        dense_layer.mlp(mlp_in)
                        sub_layer.mlp(mlp_in)
                    stats.add(captured["dense"], captured["subnet"])
                _rectify(adapter.linears(dense_layer)["down"], adapter.linears(sub_layer)["down"], kept["down"],
                         stats, method, damp, rho, iterations, entry, "mlp")
            states = runner.run_layer(sub_layer, states)
        report.append(entry)
        if progress is not None:
            progress.update(1)
    return ReformationResult(method=method, seconds=time.perf_counter() - start, layers=report)


def _rectify(dense_linear, sub_linear, kept, stats, method, damp, rho, iterations, entry, name) -> None:
    weight = dense_linear.weight.detach()
    before = output_error(weight, sub_linear.weight.detach(), stats)
    if kept.numel() == weight.shape[1]:  # nothing pruned upstream of this projection's columns
        entry[f"{name}_error_before"] = entry[f"{name}_error_after"] = before
        return
    new_weight = solve(method, weight, kept, stats, damp=damp, rho=rho, iterations=iterations)
    after = output_error(weight, new_weight, stats)
    if after > before:  # never make a layer worse than plain inheritance (possible with ADMM's few iterations)
        new_weight, after = sub_linear.weight.detach().to(torch.float64), before
    sub_linear.weight.copy_(new_weight.to(sub_linear.weight.dtype))
    entry[f"{name}_error_before"] = before
    entry[f"{name}_error_after"] = after
