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

from optimum_subnet.algorithms import least_squares as ls
from optimum_subnet.calibration import BlockwiseRunner, GramAccumulator, record_inputs

logger = logging.getLogger(__name__)

METHODS = ("closed_form", "admm", "none")
#: Ridge strengths tried for the closed form (relative to the mean diagonal of H'), chosen on held-out windows.
DAMP_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class SiteStatistics:
    """Second moments of one column-pruned projection's inputs: dense ``X``, subnet ``X_S'``."""

    dense: GramAccumulator = field(default_factory=lambda: GramAccumulator("dense inputs"))
    cross: GramAccumulator = field(default_factory=lambda: GramAccumulator("dense x subnet inputs"))
    subnet: GramAccumulator = field(default_factory=lambda: GramAccumulator("subnet inputs"))
    dense_sum: torch.Tensor | None = None  # per-channel sums: the means an intercept needs
    subnet_sum: torch.Tensor | None = None

    def add(self, dense_x: torch.Tensor, subnet_x: torch.Tensor) -> None:
        self.dense.add(dense_x)
        self.cross.add(dense_x, subnet_x)
        self.subnet.add(subnet_x)
        d = dense_x.reshape(-1, dense_x.shape[-1]).to(torch.float64).sum(0)
        s = subnet_x.reshape(-1, subnet_x.shape[-1]).to(torch.float64).sum(0)
        self.dense_sum = d if self.dense_sum is None else self.dense_sum + d
        self.subnet_sum = s if self.subnet_sum is None else self.subnet_sum + s

    @property
    def dense_mean(self) -> torch.Tensor:
        return self.dense_sum / self.dense.tokens

    @property
    def subnet_mean(self) -> torch.Tensor:
        return self.subnet_sum / self.subnet.tokens

    @property
    def empty(self) -> bool:
        return self.dense.tokens == 0

    def merged(self, other: "SiteStatistics") -> "SiteStatistics":
        if other.empty:
            return self
        out = SiteStatistics()
        for name in ("dense", "cross", "subnet"):
            a, b, acc = getattr(self, name), getattr(other, name), getattr(out, name)
            acc.sum, acc.tokens = a.sum + b.sum, a.tokens + b.tokens
        out.dense_sum, out.subnet_sum = self.dense_sum + other.dense_sum, self.subnet_sum + other.subnet_sum
        return out


class TwoFoldStatistics:
    """Statistics split by calibration window into a fitting fold and a validation fold.

    Least squares on few tokens overfits (a 1536-wide W_down fitted on 2048 tokens made SmolLM2's
    perplexity 7x worse): the damping is therefore chosen per projection on windows the fit did not
    see, and a fit that does not beat plain inheritance on them is not applied.
    """

    def __init__(self):
        self.folds = (SiteStatistics(), SiteStatistics())
        self.windows = 0

    def add(self, dense_x: torch.Tensor, subnet_x: torch.Tensor) -> None:
        for j in range(dense_x.shape[0]):  # one window at a time, alternating folds
            self.folds[self.windows % 2].add(dense_x[j], subnet_x[j])
            self.windows += 1

    @property
    def fit(self) -> SiteStatistics:
        return self.folds[0]

    @property
    def validation(self) -> SiteStatistics:
        return self.folds[1]

    def combined(self) -> SiteStatistics:
        return self.folds[0].merged(self.folds[1])


def output_error(weight, new_weight, stats: SiteStatistics, bias: torch.Tensor | None = None) -> float:
    """``||W_hat X_S' + b - W X|| / ||W X||`` from the recorded moments (``b`` the subnet's bias, if any)."""
    w = weight.to(torch.float64)
    v = new_weight.to(torch.float64)
    h, c, hs = (stats.dense.mean.to(w.device), stats.cross.mean.to(w.device), stats.subnet.mean.to(w.device))
    ref = torch.einsum("ij,jk,ik->", w, h, w)
    err = ref - 2 * torch.einsum("ij,jk,ik->", w, c, v) + torch.einsum("ij,jk,ik->", v, hs, v)
    if bias is not None:
        b = bias.to(device=w.device, dtype=torch.float64)
        mu_x, mu_s = stats.dense_mean.to(w.device), stats.subnet_mean.to(w.device)
        err = err + 2 * b @ (v @ mu_s) + b @ b - 2 * b @ (w @ mu_x)
    return float((err.clamp_min(0) / ref.clamp_min(1e-30)).sqrt())


def solve(method: str, weight: torch.Tensor, kept: torch.Tensor, stats: SiteStatistics, *, damp: float,
          rho: float, iterations: int, bias: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W_hat, b or None)``; ``bias`` fits an intercept too (closed form only)."""
    kept = kept.to(weight.device)
    if method == "closed_form":
        cross, gram = stats.cross.mean.to(weight.device), stats.subnet.mean.to(weight.device)
        if bias:
            return ls.closed_form_with_bias(weight, cross, gram, stats.dense_mean.to(weight.device),
                                            stats.subnet_mean.to(weight.device), damp, prior=weight[:, kept])
        return ls.closed_form(weight, cross, gram, damp, prior=weight[:, kept]), None
    if method == "admm":
        return ls.admm(weight, stats.dense.mean.to(weight.device), kept, rho=rho, iterations=iterations), None
    raise ValueError(f"unknown reformation method {method!r}; use one of {', '.join(METHODS)}")


@dataclass
class ReformationResult:
    method: str
    seconds: float
    layers: list[dict]

    def mean_error(self, key: str) -> float | None:
        values = [layer[key] for layer in self.layers if key in layer]
        return sum(values) / len(values) if values else None


@torch.no_grad()
def reform(dense, subnet, spec, adapter, windows: torch.Tensor, batch_size: int, device, method: str = "closed_form",
           damp: float | None = None, damp_grid=DAMP_GRID, rho: float = 1.0, iterations: int = 30,
           progress=None, streamer=None) -> ReformationResult:
    """Rectify ``subnet``'s W_O and W_down in place; returns per-layer output errors before/after.

    ``damp`` fixes the closed form's ridge ``lambda = damp * mean(diag H')``; ``None`` picks it per
    projection from ``damp_grid`` on held-out calibration windows (see :class:`TwoFoldStatistics`).
    ``streamer``: both models' blocks live off the device; each (dense, subnet) layer pair is streamed
    to it in turn and the reformed subnet layer copied back.
    """
    if method not in METHODS:
        raise ValueError(f"unknown reformation method {method!r}; use one of {', '.join(METHODS)}")
    start = time.perf_counter()
    shape = spec.shape
    runner = BlockwiseRunner(subnet, adapter, windows, batch_size, device, streamer=streamer)
    states = runner.initial_states()
    dense_layers = adapter.decoder_layers(dense)
    subnet_layers = adapter.decoder_layers(subnet)
    report = []
    pairs = [(dense_layers[layer_spec.source_index], subnet_layers[index])
             for index, layer_spec in enumerate(spec.layers)]
    for index in runner.blocks(pairs, writeback=[1]):
        layer_spec = spec.layers[index]
        dense_layer, sub_layer = pairs[index]
        kept = adapter.kept_rows(layer_spec, shape)
        entry = {"layer": index, "source_layer": layer_spec.source_index}
        if method != "none":
            # --- attention output projection ---------------------------------------------------
            stats = TwoFoldStatistics()
            for hidden in states:
                context = runner.context(hidden)
                captured = {}
                with record_inputs({"dense": adapter.site_modules(dense_layer)["attn_out"],
                                    "subnet": adapter.site_modules(sub_layer)["attn_out"]},
                                   lambda s, x: captured.__setitem__(s, x)):
                    adapter.attention_sublayer(dense_layer, hidden, context)
                    adapter.attention_sublayer(sub_layer, hidden, context)
                stats.add(captured["dense"], captured["subnet"])
            _rectify(adapter.linears(dense_layer)["o"], adapter.linears(sub_layer)["o"], kept["o"], stats,
                     method, damp, damp_grid, rho, iterations, entry, "attention")
            # --- MLP down projection (after the reformed attention) ------------------------------
            stats = TwoFoldStatistics()
            for hidden in states:
                context = runner.context(hidden)
                mlp_in = adapter.mlp_input(sub_layer, adapter.attention_sublayer(sub_layer, hidden, context))
                captured = {}
                with record_inputs({"dense": adapter.site_modules(dense_layer)["mlp_out"],
                                    "subnet": adapter.site_modules(sub_layer)["mlp_out"]},
                                   lambda s, x: captured.__setitem__(s, x)):
                    adapter.mlp(dense_layer)(mlp_in)
                    adapter.mlp(sub_layer)(mlp_in)
                stats.add(captured["dense"], captured["subnet"])
            _rectify(adapter.linears(dense_layer)["down"], adapter.linears(sub_layer)["down"], kept["down"],
                     stats, method, damp, damp_grid, rho, iterations, entry, "mlp")
        states = runner.run_layer(sub_layer, states)
        report.append(entry)
        if progress is not None:
            progress.update(1)
    return ReformationResult(method=method, seconds=time.perf_counter() - start, layers=report)


def _rectify(dense_linear, sub_linear, kept, stats: TwoFoldStatistics, method, damp, damp_grid, rho, iterations,
             entry, name) -> None:
    """Refit ``sub_linear`` (its bias too, when it has one and the method is the closed form)."""
    weight = dense_linear.weight.detach()
    inherited = sub_linear.weight.detach()
    with_bias = sub_linear.bias is not None and method == "closed_form"
    current_bias = sub_linear.bias.detach() if sub_linear.bias is not None else None
    combined = stats.combined()
    before = output_error(weight, inherited, combined, current_bias)
    entry[f"{name}_error_before"] = entry[f"{name}_error_after"] = before
    if kept.numel() == weight.shape[1] and not with_bias:  # nothing pruned upstream of this projection's columns
        return
    options = list(damp_grid) if (method == "closed_form" and damp is None) else [damp]
    if stats.validation.empty:  # a single calibration window: nothing to validate on
        choice = options[len(options) // 2] if damp is None and method == "closed_form" else damp
    else:
        scores = {"inherit": output_error(weight, inherited, stats.validation, current_bias)}
        for option in options:
            fitted, fitted_bias = solve(method, weight, kept, stats.fit, damp=option, rho=rho, iterations=iterations,
                                        bias=with_bias)
            scores[option] = output_error(weight, fitted, stats.validation, fitted_bias)
        choice = min(scores, key=scores.get)
        entry[f"{name}_validation_error_inherited"] = scores["inherit"]
        entry[f"{name}_validation_error"] = scores[choice]
    entry[f"{name}_damp"] = choice if method == "closed_form" else None
    entry[f"{name}_bias"] = with_bias and choice != "inherit"
    if choice == "inherit":
        return
    new_weight, new_bias = solve(method, weight, kept, combined, damp=choice if choice is not None else 0.0, rho=rho,
                                 iterations=iterations, bias=with_bias)
    sub_linear.weight.copy_(new_weight.to(sub_linear.weight.dtype))
    if new_bias is not None:
        sub_linear.bias.copy_(new_bias.to(sub_linear.bias.dtype))
    entry[f"{name}_error_after"] = output_error(weight, new_weight, combined, new_bias)
