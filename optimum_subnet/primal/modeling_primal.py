"""Primal-Attention (Chen et al., NeurIPS 2023) as a causal, drop-in attention layer for decoder LMs.

Self-contained (imports only torch and transformers) because it is copied beside saved weights so that
``trust_remote_code=True`` loads a model with primal layers without optimum-subnet installed.

The paper writes self-attention as an asymmetric kernel SVD (KSVD) and uses its *primal*
representation: per head, with the cosine feature maps ``phi_q(x) = q / ||q||`` and
``phi_k(x) = k / ||k||`` (the kernel ``kappa(x_i, x_j) = phi_q(x_i)^T phi_k(x_j)``), the projection
scores

    e(x) = W_e^T phi_q(x),    r(x) = W_r^T phi_k(x)          (paper Sec. 3.2, the primal representation)

of low rank ``s`` are the layer's output, mapped back by a linear map ``W_c [e; r]`` (Sec. 4,
"Primal-Attention"). No N x N matrix and no values exist: the cost is O(N p s).

Causal form. A decoder needs output ``t`` to depend on tokens ``<= t`` only. The authors' causal
variant (their fairseq language model) applies the feature maps to the *running means* of queries
and keys: ``phi(mean_{i<=t} q_i)``. The mean's ``1/t`` cancels in ``phi``, so the running *sums*
are what is kept: a decoding step needs the sums of the queries and keys seen so far, a state of
fixed size per layer (``(num_heads + num_kv_heads) x head_dim`` numbers per sequence) instead of a
KV cache that grows with the context (:class:`PrimalStateLayer`).

GQA. Keys are projected and summed once per KV head; each query head ``h`` has its own ``W_e[h]``
and ``W_r[h]`` (the KSVD of head ``h``'s kernel, whose keys are those of its KV head).

Output. The per-head ``W_c`` followed by the attention's ``W_O`` is stored as one matrix
``out_proj`` (hidden x 2 s H, with bias): their product is all the layer computes, and the
calibration fit (ridge regression) solves for it exactly. Queries and keys are taken before RoPE:
the running mean of position-rotated vectors averages the fast-rotating channels away.

KSVD regularizer (Sec. 4.2, the training objective; per layer, averaged over heads and tokens):

    J = 1/2 mean ||e * lambda||^2 + 1/2 mean ||r * lambda||^2 - mean_h Tr(W_e[h]^T W_r[h]),
    loss = task loss + eta * mean(J^2)

The paper shows (KKT conditions of the KSVD problem) that the stationary solution has J = 0, so
minimizing J^2 enforces the KSVD without an explicit decomposition.

Families. The module is built from whatever attention module it replaces (:func:`primal_attention_for`):
separate ``q_proj`` / ``k_proj`` (with their biases, Qwen2) or a fused ``qkv_proj`` (Phi-3: its query
and key rows become this layer's own ``q_proj`` / ``k_proj``; the value rows are dropped), and the
family's per-head q/k norms (Qwen3, Gemma3), which are kept and applied before the feature maps:
the family's softmax compares the *normalized* queries and keys (``q_norm(q) . k_norm(k)``), so
the cosine kernel of the primal layer is taken over those same vectors, and the norms' learned
per-channel weights keep shaping it. What the softmax adds around that comparison has no primal
counterpart and needs none: the softmax scale (Gemma's ``query_pre_attn_scalar``) and logit
soft-capping do not change a cosine, and RoPE (full or partial, Phi-3) is not applied (queries and
keys are taken before it, see "Output"). A sliding-window layer (Mistral, Qwen2, Gemma3's local
layers) becomes a primal layer over the whole prefix: a running sum cannot forget the tokens that
leave a window without keeping them, which would make the state grow again; the calibration fit
reproduces the windowed layer's outputs on windows of the calibration length.

Config entry read by the modeling code (``config.primal_attention``)::

    {"format_version": 1, "layers": [{"layer": 28, "rank": 16}, {"layer": 29, "rank": 16}]}

:func:`apply_primal_layers` replaces those layers' ``self_attn`` after the base model is built;
:func:`primal_classes` derives, from any family's config and causal-LM classes (dense or subnet),
the pair that does so (model type ``primal_<base model type>``). A saved model's entry module (a
few generated lines, see ``optimum_subnet.primal.save``) calls it on the family's own classes.
"""

from typing import Optional

import torch
from torch import nn
from transformers.cache_utils import Cache, CacheLayerMixin

CONFIG_KEY = "primal_attention"
FORMAT_VERSION = 1
#: smallest norm the feature map divides by (an all-zero running sum: no valid token yet)
FEATURE_EPS = 1e-6


# ------------------------------------------------------------------------------------------ math
def feature_map(x: torch.Tensor, eps: float = FEATURE_EPS) -> torch.Tensor:
    """``phi(x) = x / ||x||`` over the last axis: the cosine kernel's feature map (paper Sec. 4)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def causal_features(x: torch.Tensor, valid: Optional[torch.Tensor] = None,
                    initial_sum: Optional[torch.Tensor] = None):
    """``phi(sum_{i<=t} x_i)`` for every position ``t`` (the causal map: phi of the running mean,
    whose 1/t cancels), and the running sum after the last position (the decoding state).

    ``x``: (batch, heads, seq, dim); ``valid``: (batch, seq) bool, False for padding (excluded from
    the sums); ``initial_sum``: (batch, heads, dim), the sum over earlier chunks.
    """
    if valid is not None:
        x = x * valid[:, None, :, None].to(x.dtype)
    sums = torch.cumsum(x, dim=2)
    if initial_sum is not None:
        sums = sums + initial_sum[:, :, None, :]
    return feature_map(sums), sums[:, :, -1]


def projection_scores(phi_q: torch.Tensor, phi_k: torch.Tensor, w_e: torch.Tensor, w_r: torch.Tensor):
    """``e = W_e^T phi_q`` and ``r = W_r^T phi_k`` per head (Sec. 3.2): (batch, heads, seq, rank) each.
    ``phi_k`` has one row of heads per *query* head (KV heads repeated for GQA)."""
    return torch.einsum("bhnd,hds->bhns", phi_q, w_e), torch.einsum("bhnd,hds->bhns", phi_k, w_r)


def ksvd_objective(e: torch.Tensor, r: torch.Tensor, lam: torch.Tensor, w_e: torch.Tensor,
                   w_r: torch.Tensor) -> torch.Tensor:
    """The KSVD objective J of one layer, one value per sequence of the batch (Sec. 4.2)::

        J = 1/2 mean_{h,t} ||e_t * lambda_h||^2 + 1/2 mean_{h,t} ||r_t * lambda_h||^2 - mean_h Tr(W_e[h]^T W_r[h])

    ``e``, ``r``: (batch, heads, seq, rank); ``lam``: (heads, rank); ``w_e``, ``w_r``: (heads, dim, rank).
    """
    scale = lam[None, :, None, :]
    e_term = (e * scale).pow(2).sum(-1).mean(dim=(1, 2)) / 2
    r_term = (r * scale).pow(2).sum(-1).mean(dim=(1, 2)) / 2
    trace = torch.einsum("hds,hds->h", w_e, w_r).mean()
    return e_term + r_term - trace


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(batch, kv_heads, ...) -> (batch, kv_heads * groups, ...): each KV head once per query head."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def valid_tokens(attention_mask, length: int) -> Optional[torch.Tensor]:
    """Which of the chunk's ``length`` tokens are real (not padding), from the 4-D mask the model
    builds: a real token always attends to itself, a padding token never (its key is masked), and
    the chunk's tokens are the mask's last ``length`` key columns. The diagonal is right for causal,
    sliding-window and cached masks alike (a window's last row would not see early tokens). A 2-D
    mask (flash attention's: 1 for real tokens) is read directly. None: all are real (no mask)."""
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        return attention_mask[:, -length:].bool()
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        return None
    index = torch.arange(length, device=attention_mask.device)
    rows = attention_mask[:, 0, -length:, attention_mask.shape[-1] - length:]
    diagonal = rows[:, index, index]
    return diagonal if diagonal.dtype == torch.bool else diagonal == 0


# ------------------------------------------------------------------------------ decoding state
class PrimalStateLayer(CacheLayerMixin):
    """The decoding state of one primal layer inside a transformers ``Cache``: running sums of the
    queries (batch, heads, head_dim) and keys (batch, kv_heads, head_dim), float32, and the number of
    positions seen (what ``get_seq_length`` reports, so positions and masks come out right even when
    layer 0 is a primal layer). It replaces the KV-cache layer at the primal layer's index the first
    time that layer runs with a cache, so ``generate``, beam search and cache reordering work unchanged.

    The model builds one mask per attention type from the cache's first layer of that type; when that
    layer is a primal one, this layer answers the mask sizes as the layer it replaced would have
    (``sliding_window``: a sliding-window layer's, Mistral / Qwen2 / Gemma3), so the other layers'
    masks stay right.
    """

    is_sliding = False
    is_compileable = False

    def __init__(self, sliding_window: Optional[int] = None):
        super().__init__()
        self.query_sum: Optional[torch.Tensor] = None
        self.key_sum: Optional[torch.Tensor] = None
        self.seen = 0
        self.sliding_window = sliding_window
        self.is_sliding = sliding_window is not None

    def lazy_initialization(self, key_states: torch.Tensor):  # nothing to allocate before the first step
        pass

    def update(self, key_states, value_states, cache_kwargs=None):
        raise RuntimeError("a Primal-Attention layer keeps running sums, not keys and values")

    def advance(self, query_sum: torch.Tensor, key_sum: torch.Tensor, length: int) -> None:
        self.query_sum, self.key_sum = query_sum, key_sum
        self.seen += length
        self.is_initialized = True

    def get_mask_sizes(self, cache_position: torch.Tensor):
        query_length = cache_position.shape[0]
        window = self.sliding_window
        if window is None:
            return self.seen + query_length, 0
        # as transformers' DynamicSlidingWindowLayer: it keeps the last window - 1 positions
        kv_offset = max(self.seen - window + 1, 0)
        kv_length = (window - 1 if self.seen >= window else self.seen) + query_length
        return kv_length, kv_offset

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_cache_shape(self) -> int:
        return self.sliding_window if self.sliding_window is not None else -1

    def _apply(self, fn) -> None:
        if self.query_sum is not None:
            self.query_sum, self.key_sum = fn(self.query_sum), fn(self.key_sum)

    def reset(self) -> None:
        self.query_sum = self.key_sum = None
        self.seen = 0
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._apply(lambda t: t[indices])

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.seen + max_length
        if max_length < self.seen:  # a sum cannot forget its last terms
            raise RuntimeError("a Primal-Attention state cannot be cropped (assisted decoding is not supported)")

    def offload(self):
        self._apply(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self):
        pass


def primal_state(cache, layer_idx: int) -> Optional[PrimalStateLayer]:
    """The :class:`PrimalStateLayer` of ``layer_idx`` in ``cache`` (installed on first use), or None."""
    if cache is None:
        return None
    if not isinstance(cache, Cache):
        raise TypeError(f"Primal-Attention needs a transformers Cache object, got {type(cache).__name__}")
    layers = cache.layers
    replicate = getattr(cache, "layer_class_to_replicate", None)
    while len(layers) < layer_idx:  # a lazily grown cache: the layers before this one are ordinary
        layers.append(replicate())
    if len(layers) == layer_idx:
        layers.append(PrimalStateLayer())
    state = layers[layer_idx]
    if not isinstance(state, PrimalStateLayer):
        if state.get_seq_length() > 0:
            raise RuntimeError(f"the cache holds keys and values for layer {layer_idx}, a Primal-Attention layer")
        window = getattr(state, "sliding_window", None) if getattr(state, "is_sliding", False) else None
        state = layers[layer_idx] = PrimalStateLayer(window)
    return state


# -------------------------------------------------------------------------------------- module
class PrimalAttention(nn.Module):
    """Primal-Attention with this layer's own head counts and head size; the same call signature as
    transformers' attention modules (``forward(hidden_states, position_embeddings, attention_mask,
    past_key_values=None, cache_position=None, **kwargs) -> (output, None)``).

    Parameters: ``q_proj`` / ``k_proj`` (those of the replaced attention; a fused ``qkv_proj``'s query
    and key rows), optionally ``q_norm`` / ``k_norm`` (the family's per-head norms, applied before the
    feature maps), ``w_e`` / ``w_r`` (heads, head_dim, rank), ``lam`` (heads, rank; the KSVD's Lambda)
    and ``out_proj`` (2 * rank * heads -> hidden, W_c with W_O folded in). The layer has no values.
    ``is_sliding`` / ``sliding_window`` are the replaced layer's (families read them to pick a rotary
    table; the primal layer itself attends to the whole prefix).
    """

    def __init__(self, hidden_size: int, num_heads: int, num_key_value_heads: int, head_dim: int, rank: int,
                 layer_idx: int, bias: bool = False, q_norm: Optional[nn.Module] = None,
                 k_norm: Optional[nn.Module] = None, sliding_window: Optional[int] = None, is_sliding: bool = False):
        super().__init__()
        if not 1 <= rank <= head_dim:
            raise ValueError(f"rank must be in 1..head_dim ({head_dim}), got {rank}")
        if num_heads % num_key_value_heads:
            raise ValueError(f"{num_heads} query heads do not split into {num_key_value_heads} KV groups")
        if (q_norm is None) != (k_norm is None):
            raise ValueError("q_norm and k_norm come together")
        self.hidden_size, self.num_heads, self.num_key_value_heads = hidden_size, num_heads, num_key_value_heads
        self.head_dim, self.rank, self.layer_idx = head_dim, rank, layer_idx
        self.num_key_value_groups = num_heads // num_key_value_heads
        self.is_sliding, self.sliding_window = is_sliding, sliding_window
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_key_value_heads * head_dim, bias=bias)
        if q_norm is not None:
            self.q_norm, self.k_norm = q_norm, k_norm
        self.w_e = nn.Parameter(torch.zeros(num_heads, head_dim, rank))
        self.w_r = nn.Parameter(torch.zeros(num_heads, head_dim, rank))
        self.lam = nn.Parameter(torch.ones(num_heads, rank))
        self.out_proj = nn.Linear(2 * rank * num_heads, hidden_size, bias=True)
        with torch.no_grad():  # orthonormal start (as the authors'); a fit or a checkpoint overwrites it
            if self.w_e.device.type != "meta":
                eye = torch.eye(head_dim, rank)
                self.w_e.copy_(eye.expand(num_heads, -1, -1))
                self.w_r.copy_(eye.expand(num_heads, -1, -1))
        #: set by ``forward`` when ``record_ksvd`` (or training): J per sequence of the last batch
        self.record_ksvd = False
        self.last_ksvd: Optional[torch.Tensor] = None

    def project(self, hidden_states: torch.Tensor):
        """Queries (batch, heads, seq, head_dim) and keys (batch, kv_heads, seq, head_dim), float32, as
        the replaced attention compares them before RoPE: projected, then normalized per head where the
        family does (the norm acts on each head's vector, so before or after the transpose is the same)."""
        b, n, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(b, n, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(b, n, self.num_key_value_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        return q.transpose(1, 2).float(), k.transpose(1, 2).float()

    def scores(self, hidden_states: torch.Tensor, attention_mask=None, state: Optional[PrimalStateLayer] = None):
        """``(e, r)`` of every position, float32 (batch, heads, seq, rank); advances ``state``."""
        q, k = self.project(hidden_states)
        valid = valid_tokens(attention_mask, hidden_states.shape[1])
        q_sum0 = k_sum0 = None
        if state is not None and state.query_sum is not None:
            q_sum0, k_sum0 = state.query_sum, state.key_sum
        phi_q, q_sum = causal_features(q, valid, q_sum0)
        phi_k, k_sum = causal_features(k, valid, k_sum0)
        if state is not None:
            state.advance(q_sum.detach(), k_sum.detach(), hidden_states.shape[1])
        return projection_scores(phi_q, repeat_kv(phi_k, self.num_key_value_groups), self.w_e.float(),
                                 self.w_r.float())

    def features(self, e: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``[e_1; r_1; ...; e_H; r_H]`` per position: (batch, seq, 2 * rank * heads), ``out_proj``'s input."""
        b, _, n, _ = e.shape
        return torch.cat([e, r], dim=-1).transpose(1, 2).reshape(b, n, 2 * self.rank * self.num_heads)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: Optional[tuple] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[Cache] = None,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs,
    ):
        e, r = self.scores(hidden_states, attention_mask, primal_state(past_key_values, self.layer_idx))
        if self.training or self.record_ksvd:
            self.last_ksvd = ksvd_objective(e, r, self.lam.float(), self.w_e.float(), self.w_r.float())
        out = self.out_proj(self.features(e, r).to(self.out_proj.weight.dtype))
        return out, None


# ------------------------------------------------------------------------------- model surgery
def primal_entries(config) -> dict:
    """``{layer index: rank}`` from ``config.primal_attention`` (empty when there is none)."""
    entry = getattr(config, CONFIG_KEY, None)
    if not entry:
        return {}
    version = entry.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(f"primal_attention format {version} is newer than this code ({FORMAT_VERSION})")
    return {int(item["layer"]): int(item["rank"]) for item in entry["layers"]}


def attention_layout(attention: nn.Module) -> dict:
    """Head counts, head size and projections of any supported family's attention module (the
    family's own, or a subnet's per-layer-width one): ``q`` / ``k`` are ``(weight, bias)`` row blocks
    (slices of a fused ``qkv_proj``, Phi-3)."""
    head_dim = attention.head_dim
    if hasattr(attention, "qkv_proj"):  # rows [q; k; v]; the query width is o_proj's input width
        fused = attention.qkv_proj
        q_size = attention.o_proj.in_features
        kv_size = (fused.out_features - q_size) // 2
        bias = fused.bias
        q = (fused.weight[:q_size], None if bias is None else bias[:q_size])
        k = (fused.weight[q_size:q_size + kv_size], None if bias is None else bias[q_size:q_size + kv_size])
    else:
        q = (attention.q_proj.weight, attention.q_proj.bias)
        k = (attention.k_proj.weight, attention.k_proj.bias)
    return {"head_dim": head_dim, "heads": q[0].shape[0] // head_dim, "kv_heads": k[0].shape[0] // head_dim,
            "q": q, "k": k}


def primal_attention_for(attention: nn.Module, hidden_size: int, layer_idx: int, rank: int) -> PrimalAttention:
    """An (unfitted) :class:`PrimalAttention` at the widths of ``attention`` (any supported family's
    attention module, dense or subnet), sharing its query and key projections and q/k norms (a fused
    projection's query and key rows are copied into separate ones)."""
    layout = attention_layout(attention)
    q_weight, q_bias = layout["q"]
    device, dtype = q_weight.device, q_weight.dtype
    norms = (getattr(attention, "q_norm", None), getattr(attention, "k_norm", None))
    module = PrimalAttention(hidden_size, layout["heads"], layout["kv_heads"], layout["head_dim"], rank, layer_idx,
                             bias=q_bias is not None, q_norm=norms[0], k_norm=norms[1],
                             sliding_window=getattr(attention, "sliding_window", None),
                             is_sliding=bool(getattr(attention, "is_sliding", False)))
    if hasattr(attention, "qkv_proj"):
        module.q_proj.to(device=device, dtype=dtype)
        module.k_proj.to(device=device, dtype=dtype)
        if device.type != "meta":
            with torch.no_grad():
                for linear, (weight, bias) in ((module.q_proj, layout["q"]), (module.k_proj, layout["k"])):
                    linear.weight.copy_(weight)
                    if bias is not None:
                        linear.bias.copy_(bias)
    else:
        module.q_proj, module.k_proj = attention.q_proj, attention.k_proj
    return module.to(device=device, dtype=dtype) if device.type != "meta" else module


def apply_primal_layers(model: nn.Module, config) -> None:
    """Replace ``self_attn`` of every layer listed in ``config.primal_attention`` (called at the end of
    a model's ``__init__``; the checkpoint's weights are loaded afterwards)."""
    layers = model.model.layers
    for index, rank in primal_entries(config).items():
        layer = layers[index]
        layer.self_attn = primal_attention_for(layer.self_attn, config.hidden_size, index, rank)


class PrimalConfigMixin:
    """Mixed in before a family's config class: adds ``primal_attention`` (see the module docstring)."""

    def __init__(self, primal_attention=None, **kwargs):
        super().__init__(**kwargs)
        self.primal_attention = primal_attention


class PrimalModelMixin:
    """Mixed in before a family's causal-LM class: builds the base model, then the primal layers."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_primal_layers(self, config)


def primal_classes(config_cls: type, lm_cls: type, module: Optional[str] = None) -> tuple[type, type]:
    """The config and causal-LM classes of ``lm_cls`` with Primal-Attention layers: subclasses that add
    only ``primal_attention`` and the construction of those layers. Model type ``primal_<base type>``;
    names ``Primal<base name>``; ``module``: the module they are declared in (for pickling and
    ``trust_remote_code``)."""
    namespace = {"__module__": module or __name__}
    config = type(f"Primal{config_cls.__name__}", (PrimalConfigMixin, config_cls),
                  {**namespace, "model_type": f"primal_{config_cls.model_type}"})
    lm = type(f"Primal{lm_cls.__name__}", (PrimalModelMixin, lm_cls), {**namespace, "config_class": config})
    return config, lm


__all__ = ["PrimalAttention", "PrimalStateLayer", "apply_primal_layers", "ksvd_objective", "primal_classes"]
