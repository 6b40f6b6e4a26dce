"""Replacing attention layers by Primal-Attention: which layers, the calibration fit, and running the
decoder from a layer on (so work shared by every step, the layers before the first primal one, runs once).

The fit streams calibration windows layer by layer (:class:`~optimum_subnet.calibration.driver.
BlockwiseRunner`): the hidden states entering the first primal layer are computed once; each primal
layer is fitted on the hidden states that reach it *through the layers already replaced* (so the
fit of a later layer corrects for the earlier ones), to reproduce what the original attention
outputs on those same inputs.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from optimum_subnet.algorithms.primal import (
    causal_features,
    cosine_kernel_svd,
    ksvd_lambda,
    ksvd_objective,
    repeat_kv,
    ridge_regression,
)
from optimum_subnet.calibration.driver import BlockwiseRunner
from optimum_subnet.core.errors import NonFiniteError, SubnetError, UnsupportedModelError
from optimum_subnet.evaluation.perplexity import summed_nll
from optimum_subnet.primal.config import resolve_layers
from optimum_subnet.primal.modeling_primal import (
    CONFIG_KEY,
    FORMAT_VERSION,
    PrimalAttention,
    primal_attention_for,
)

logger = logging.getLogger(__name__)

def check_supported(config) -> None:
    """One-line refusal of a model the pass cannot convert: one that already has primal layers, or a
    family without an adapter (every family in :mod:`optimum_subnet.families`, dense or subnet, is
    supported)."""
    from optimum_subnet.primal.registration import FAMILIES, family_of

    model_type = getattr(config, "model_type", None)
    family = family_of(model_type)
    if family is not None and model_type == family.model_type:
        raise UnsupportedModelError(f"model already has Primal-Attention layers ({model_type}); start from the "
                                    "model it was converted from")
    if family is None:
        raise UnsupportedModelError(f"Primal-Attention does not support the {model_type!r} architecture; "
                                    f"supported: {', '.join(sorted(FAMILIES))}")


def layer_head_dims(config) -> list[int]:
    """Each decoder layer's head size (a subnet's per-layer entries, else the dense one)."""
    entries = getattr(config, "subnet_layers", None)
    if entries:
        return [int(e["head_dim"]) for e in entries]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return [head_dim] * config.num_hidden_layers


def plan_layers(config, selector: str, rank: int) -> dict[int, int]:
    """``{layer index: rank}`` for a model config; one-line errors for an unsupported family, a
    selector outside the model, or a rank the heads cannot have (the cosine kernel of a head has
    rank at most its head size)."""
    check_supported(config)
    layers = resolve_layers(selector, config.num_hidden_layers)
    if not isinstance(rank, int) or rank < 1:
        raise SubnetError(f"rank must be a whole number >= 1, got {rank}")
    head_dims = layer_head_dims(config)
    for index in layers:
        if rank > head_dims[index]:
            raise SubnetError(f"rank {rank} exceeds the head size {head_dims[index]} of layer {index}; a head's "
                              f"cosine kernel has rank at most its head size")
    return {index: rank for index in layers}


def config_entry(plan: dict[int, int]) -> dict:
    """The ``primal_attention`` entry of a saved model's config.json."""
    return {"format_version": FORMAT_VERSION,
            "layers": [{"layer": index, "rank": rank} for index, rank in sorted(plan.items())]}


# --------------------------------------------------------------------------------- the decoder
class SuffixRunner:
    """Runs decoder layers ``start..`` (+ final norm + LM head) from cached hidden states.

    ``prefix`` computes, once, the hidden states entering layer ``start`` for a set of windows (the
    layers before it never change in this pass); everything else runs from there.
    """

    def __init__(self, model, adapter, start: int, device: str | torch.device):
        self.model, self.adapter, self.start = model, adapter, start
        self.device = torch.device(device)
        self._context = None

    @property
    def layers(self) -> nn.ModuleList:
        return self.adapter.decoder_layers(self.model)

    @torch.no_grad()
    def prefix(self, windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        runner = BlockwiseRunner(self.model, self.adapter, windows, batch_size, self.device)
        states = runner.initial_states()
        for layer in list(self.layers)[: self.start]:
            states = runner.run_layer(layer, states)
        return states

    def context(self, hidden: torch.Tensor):
        key = (tuple(hidden.shape[:2]), hidden.dtype, hidden.device)
        if self._context is None or self._context[0] != key:
            self._context = (key, self.adapter.layer_context(self.model, hidden))
        return self._context[1]

    def run(self, hidden: torch.Tensor, layers: Sequence[nn.Module] | None = None) -> torch.Tensor:
        """Hidden states after ``layers`` (default: ``start..`` of the model) and the final norm."""
        context = self.context(hidden)
        for layer in (list(self.layers)[self.start:] if layers is None else layers):
            hidden = self.adapter.run_layer(layer, hidden, context)
        return self.adapter.final_norm(self.model, hidden)

    @torch.no_grad()
    def nll(self, states: list[torch.Tensor], windows: torch.Tensor, layers=None, token_chunk: int = 2048,
            progress=None) -> tuple[float, int]:
        """Summed next-token NLL of ``windows`` (whose prefix states are ``states``) and the token count."""
        total, count, offset = 0.0, 0, 0
        for hidden in states:
            batch = windows[offset: offset + hidden.shape[0]].to(hidden.device)
            offset += hidden.shape[0]
            out = self.run(hidden, layers)[:, :-1]
            total += summed_nll(out, batch[:, 1:], lambda h: self.adapter.logits(self.model, h), token_chunk)
            count += batch[:, 1:].numel()
            if progress is not None:
                progress.update(hidden.shape[0])
        if not math.isfinite(total):
            raise NonFiniteError("non-finite loss: the model produces NaN/inf logits on this data")
        return total, count

    def perplexity(self, states, windows, layers=None, progress=None) -> float:
        total, count = self.nll(states, windows, layers, progress=progress)
        return math.exp(min(total / count, 700.0))


# ---------------------------------------------------------------------------------- the fit
@dataclass
class LayerFit:
    """What the calibration fit of one layer measured (kept in the report)."""

    layer: int
    rank: int
    tokens: int
    #: per head, the fraction of the cosine kernel's energy (sum sigma^2) in the kept directions
    kernel_energy_kept: list[float]
    #: unexplained fraction of the original attention output (about its mean) on the calibration data
    output_residual: float
    #: KSVD objective J of the fitted layer on the calibration data (0 up to round-off)
    ksvd_objective: float
    #: relative ridge of the output projection (chosen on held-out calibration windows unless given)
    ridge: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def detached_primal(attention: nn.Module, hidden_size: int, index: int, rank: int) -> PrimalAttention:
    """An unfitted :class:`PrimalAttention` for ``attention`` with its *own copies* of the query / key
    projections and q/k norms: the fine-tune trains them while the original attention stays the teacher."""
    primal = primal_attention_for(attention, hidden_size, index, rank)
    for name in ("q_proj", "k_proj", "q_norm", "k_norm"):
        child = getattr(primal, name, None)
        if child is not None and any(child is c for c in attention.children()):
            setattr(primal, name, copy.deepcopy(child))
    return primal


@torch.no_grad()
def fit_layer(layer: nn.Module, adapter, index: int, rank: int, states: list[torch.Tensor], context_of: Callable,
              hidden_size: int, ridge: float | None) -> tuple[PrimalAttention, LayerFit]:
    """A :class:`PrimalAttention` fitted to reproduce ``layer``'s attention on ``states`` (the hidden
    states entering the layer): ``W_e``/``W_r``/``lambda`` from the KSVD of the calibration cosine
    kernel, ``out_proj`` by ridge regression. The layer itself is not modified."""
    attention = adapter.attention(layer)
    primal = detached_primal(attention, hidden_size, index, rank)
    heads, kv_heads, d = primal.num_heads, primal.num_key_value_heads, primal.head_dim
    device = states[0].device
    gram_q = torch.zeros(heads, d, d, dtype=torch.float64, device=device)
    gram_k = torch.zeros(kv_heads, d, d, dtype=torch.float64, device=device)
    tokens = 0
    for hidden in states:  # pass 1: Gram matrices of the causal features
        q, k = primal.project(layer.input_layernorm(hidden))
        phi_q, _ = causal_features(q)
        phi_k, _ = causal_features(k)
        gram_q += torch.einsum("bhnd,bhne->hde", phi_q, phi_q).double()
        gram_k += torch.einsum("bhnd,bhne->hde", phi_k, phi_k).double()
        tokens += hidden.shape[0] * hidden.shape[1]
    gram_q /= tokens
    gram_k = repeat_kv((gram_k / tokens).unsqueeze(0), primal.num_key_value_groups).squeeze(0)
    w_e, w_r, sigma = cosine_kernel_svd(gram_q, gram_k, rank)
    total_energy = torch.einsum("hij,hji->h", gram_q, gram_k)  # ||K||_F^2 = Tr(G_q G_k)
    kept = (sigma.pow(2).sum(-1) / total_energy.clamp_min(1e-300)).tolist()
    lam = ksvd_lambda(sigma)
    primal.w_e.copy_(w_e.to(primal.w_e.dtype))
    primal.w_r.copy_(w_r.to(primal.w_r.dtype))
    primal.lam.copy_(lam.to(primal.lam.dtype))

    p = primal.out_proj.in_features
    groups = {"fit": _Stats(p, hidden_size, device), "held_out": _Stats(p, hidden_size, device)}
    ksvd = []
    primal.record_ksvd = True
    window = 0
    for hidden in states:  # pass 2: features -> original outputs
        context = context_of(hidden)
        x = layer.input_layernorm(hidden)
        y, _ = attention(hidden_states=x, attention_mask=adapter.layer_mask(layer, context),
                         position_embeddings=adapter.layer_rotary(layer, context))
        e, r = primal.scores(x)
        ksvd.append(_objective(primal, e, r))
        features = primal.features(e, r)
        for i in range(hidden.shape[0]):  # every HELD_OUT_EVERY-th window scores the ridge candidates
            held = ridge is None and window % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
            groups["held_out" if held else "fit"].add(features[i].double(), y[i].double())
            window += 1
    primal.record_ksvd = False
    fit_stats, held_stats = groups["fit"], groups["held_out"]
    if ridge is None:
        if held_stats.n == 0:  # too few windows to hold any out
            ridge = DEFAULT_RIDGE
        else:
            errors = {d: held_stats.sse(*fit_stats.solve(d)) for d in RIDGE_GRID}
            ridge = min(errors, key=errors.get)
    everything = fit_stats.merged(held_stats)
    weight, bias = everything.solve(ridge)
    primal.out_proj.weight.copy_(weight.to(primal.out_proj.weight.dtype))
    primal.out_proj.bias.copy_(bias.to(primal.out_proj.bias.dtype))
    sse, total = everything.sse(weight, bias), everything.variance()
    if not all(math.isfinite(v) for v in (sse, total)):
        raise NonFiniteError(f"non-finite statistics while fitting layer {index}; the model or data produce NaN/inf")
    fit = LayerFit(layer=index, rank=rank, tokens=tokens, kernel_energy_kept=[round(v, 6) for v in kept],
                   output_residual=max(sse, 0.0) / max(total, 1e-300),
                   ksvd_objective=float(torch.stack(ksvd).mean()), ridge=ridge)
    return primal, fit


#: relative ridges tried when none is given; every 4th calibration window is held out to choose one
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HELD_OUT_EVERY = 4
DEFAULT_RIDGE = 1e-3


class _Stats:
    """Streamed least-squares statistics of features ``f`` (p) against targets ``y`` (q)."""

    def __init__(self, p: int, q: int, device):
        z = dict(dtype=torch.float64, device=device)
        self.xtx, self.xty = torch.zeros(p, p, **z), torch.zeros(p, q, **z)
        self.xs, self.ys, self.yy, self.n = torch.zeros(p, **z), torch.zeros(q, **z), 0.0, 0

    def add(self, f: torch.Tensor, y: torch.Tensor) -> None:
        self.xtx += f.T @ f
        self.xty += f.T @ y
        self.xs += f.sum(0)
        self.ys += y.sum(0)
        self.yy += float(y.pow(2).sum())
        self.n += f.shape[0]

    def merged(self, other: "_Stats") -> "_Stats":
        out = _Stats(0, 0, self.xtx.device)
        out.xtx, out.xty, out.xs, out.ys = self.xtx + other.xtx, self.xty + other.xty, self.xs + other.xs, self.ys + other.ys
        out.yy, out.n = self.yy + other.yy, self.n + other.n
        return out

    def solve(self, damp: float):
        return ridge_regression(self.xtx, self.xty, self.xs, self.ys, self.n, damp)

    def sse(self, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """sum ||y - W f - b||^2 from the statistics."""
        return float(self.yy - 2 * torch.trace(weight @ self.xty) - 2 * bias @ self.ys
                     + (weight @ self.xtx * weight).sum() + 2 * bias @ (weight @ self.xs) + self.n * bias @ bias)

    def variance(self) -> float:
        """sum ||y - mean(y)||^2."""
        return self.yy - float(self.ys @ self.ys) / max(self.n, 1)


def _objective(primal: PrimalAttention, e, r) -> torch.Tensor:
    return ksvd_objective(e, r, primal.lam.float(), primal.w_e.float(), primal.w_r.float()).mean()


@torch.no_grad()
def fit_primal_layers(model, adapter, plan: dict[int, int], states: list[torch.Tensor], start: int,
                      ridge: float | None, progress=None) -> tuple[dict[int, nn.Module], list[LayerFit]]:
    """Replace, in place and in increasing order, each planned layer's attention by a fitted
    :class:`PrimalAttention`. ``states`` enter layer ``start`` (the first planned one) and are not
    modified. Returns the original attention modules by layer (the fine-tune's teacher) and the fits."""
    layers = adapter.decoder_layers(model)
    runner = SuffixRunner(model, adapter, start, states[0].device)
    originals, fits = {}, []
    current, position = list(states), start
    for index in sorted(plan):
        for layer in list(layers)[position:index]:  # advance through the layers in between
            current = [adapter.run_layer(layer, h, runner.context(h)) for h in current]
        position = index
        layer = layers[index]
        primal, fit = fit_layer(layer, adapter, index, plan[index], current, runner.context,
                                model.config.hidden_size, ridge)
        originals[index] = adapter.attention(layer)
        layer.self_attn = primal
        fits.append(fit)
        logger.info("Layer %d: rank %d keeps %.1f%% of the cosine kernel's energy (mean over heads); "
                    "output residual %.4f (ridge %g), KSVD J %.2e", index, fit.rank,
                    100 * sum(fit.kernel_energy_kept) / len(fit.kernel_energy_kept), fit.output_residual,
                    fit.ridge, fit.ksvd_objective)
        if progress is not None:
            progress.update(1)
    return originals, fits


def mark_converted(model, plan: dict[int, int]) -> None:
    """Record the primal layers in the model's config (what the modeling code reads on load)."""
    setattr(model.config, CONFIG_KEY, config_entry(plan))


def convert_model(model, plan: dict[int, int], windows: torch.Tensor, ridge: float | None = None, batch_size: int = 8,
                  adapter=None):
    """Fit and install the planned primal layers in ``model`` (in place) from calibration token
    ``windows``, and make it its primal class (what saves and loads). Returns the original attention
    modules by layer and the fits. The pass (:class:`~optimum_subnet.primal.pipeline.PrimalOptimizer`)
    adds data loading, perplexities, the fine-tune, checkpoints and saving around the same steps."""
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.primal.save import as_primal_model

    adapter = adapter or get_adapter_for_subnet(model.config)
    start = min(plan)
    device = next(model.parameters()).device
    states = SuffixRunner(model, adapter, start, device).prefix(windows, batch_size)
    originals, fits = fit_primal_layers(model, adapter, plan, states, start, ridge)
    mark_converted(model, plan)
    as_primal_model(model)
    return originals, fits
