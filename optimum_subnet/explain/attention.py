"""AtMan as a registered transformers attention function (no forked modeling code).

``register_atman_attention()`` adds an ``"atman"`` entry to transformers' ``AttentionInterface``
(and the matching mask function to ``AttentionMaskInterface``). Inside :func:`atman_attention`, a
model's ``config._attn_implementation`` is ``"atman"``, so every attention layer of a stock LLaMA or
of a ``subnet_llama`` subnet calls :func:`atman_attention_forward`. The manipulation itself travels
with each forward call: ``model(ids, atman=Suppression(...))``. transformers forwards unknown keyword
arguments from ``ForCausalLM.forward`` down to the attention function (4.57 and 5.x alike), so no
state lives in module globals and concurrent models do not interfere.

Attention functions receive ``(module, query, key, value, attention_mask, scaling=..., dropout=...,
**kwargs)`` with query ``(batch, heads, q, head_dim)`` and key/value ``(batch, kv_heads, k, head_dim)``;
the mask is None (causal, no padding), a bool mask (True: attend) or an additive float mask.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from optimum_subnet.explain.atman import MODES, log_bias, multiplicative_scores

ATMAN_ATTENTION = "atman"


@dataclass
class Suppression:
    """Per-call AtMan manipulation.

    ``factors``: ``(batch, key_length)`` suppression factor of every key position for every sequence
    of the batch (0: untouched). ``mode``: ``multiplicative`` (the paper's row-shifted product) or
    ``log_bias`` (additive ``log(1 - f)``; see :mod:`.atman`). ``query_chunk``: queries processed per
    step, so the score matrix never exceeds ``batch x heads x query_chunk x keys`` (None: all at once).
    """

    factors: torch.Tensor
    mode: str = "multiplicative"
    query_chunk: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown AtMan mode {self.mode!r}; use one of {', '.join(MODES)}")


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def _mask_parts(attention_mask, q_len: int, k_len: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(valid, additive)``: a bool mask of attendable positions (broadcastable to (b, h, q, k)) and
    the float mask to add to scores (None when the mask is boolean or absent)."""
    if attention_mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # queries are the last q_len keys
        return (torch.arange(k_len, device=device)[None, :] <= q_pos)[None, None], None
    mask = attention_mask[..., :k_len]
    if mask.dtype == torch.bool:
        return mask, None
    return mask > torch.finfo(mask.dtype).min / 2, mask


def atman_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
                            atman: Suppression | None = None, **kwargs):
    """Attention with AtMan's per-key suppression; plain SDPA when the call carries no ``atman``."""
    if atman is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, _, q_len, head_dim = query.shape
    k_len = key.shape[-2]
    scaling = head_dim**-0.5 if scaling is None else scaling
    groups = getattr(module, "num_key_value_groups", query.shape[1] // key.shape[1])
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    if atman.factors.shape[0] != b or atman.factors.shape[-1] < k_len:
        raise ValueError(f"suppression factors of shape {tuple(atman.factors.shape)} do not cover a batch of {b} "
                         f"sequences x {k_len} keys")
    factors = atman.factors.to(device=query.device)[:, None, None, :k_len]  # (b, 1, 1, k)
    valid, additive = _mask_parts(attention_mask, q_len, k_len, query.device)
    chunk = atman.query_chunk or q_len
    dropout = dropout if module.training else 0.0
    outputs = []
    for start in range(0, q_len, chunk):
        stop = min(q_len, start + chunk)
        q = query[:, :, start:stop]
        v_rows = valid[..., start:stop, :] if valid.shape[-2] == q_len else valid
        a_rows = None if additive is None else (additive[..., start:stop, :] if additive.shape[-2] == q_len
                                                else additive)
        if atman.mode == "multiplicative":
            scores = torch.matmul(q, key.transpose(2, 3)) * scaling
            scores = multiplicative_scores(scores, v_rows, factors.to(scores.dtype))
            if a_rows is not None:
                scores = scores + a_rows
            scores = scores.masked_fill(~v_rows, torch.finfo(scores.dtype).min)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
            probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
            outputs.append(torch.matmul(probs, value))
        else:
            bias = log_bias(factors, query.dtype)
            if a_rows is not None:
                bias = bias + a_rows.to(query.dtype)
            shape = torch.broadcast_shapes(bias.shape, v_rows.shape, (b, 1, stop - start, k_len))
            bias = bias.expand(shape).masked_fill(~v_rows, torch.finfo(query.dtype).min)
            outputs.append(torch.nn.functional.scaled_dot_product_attention(
                q, key, value, attn_mask=bias, dropout_p=dropout, scale=scaling))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_atman_attention() -> str:
    """Register the ``"atman"`` attention and mask functions with transformers (idempotent: the
    registry is a name -> function mapping; no manipulation state is stored in it)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATMAN_ATTENTION, atman_attention_forward)
    AttentionMaskInterface.register(ATMAN_ATTENTION, sdpa_mask)
    return ATMAN_ATTENTION


@contextlib.contextmanager
def atman_attention(model) -> Iterator[None]:
    """Route ``model``'s attention through AtMan for the duration of the block; restored afterwards."""
    register_atman_attention()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATMAN_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
