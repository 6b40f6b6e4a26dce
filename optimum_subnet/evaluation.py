"""Perplexity, computed in chunks so the full (tokens x vocabulary) logits never exist at once."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import NonFiniteError


@torch.no_grad()
def negative_log_likelihood(model, windows: torch.Tensor, batch_size: int = 4, token_chunk: int = 2048,
                            progress=None) -> tuple[float, int]:
    """Sum of next-token NLL over all windows and the number of predicted tokens."""
    device = next(model.parameters()).device
    base = model.base_model
    head = model.get_output_embeddings()
    total, count = 0.0, 0
    for batch in windows.split(max(1, batch_size)):
        batch = batch.to(device)
        hidden = base(input_ids=batch, use_cache=False).last_hidden_state[:, :-1]
        targets = batch[:, 1:]
        flat_hidden = hidden.reshape(-1, hidden.shape[-1])
        flat_targets = targets.reshape(-1)
        for start in range(0, flat_targets.numel(), token_chunk):
            logits = head(flat_hidden[start : start + token_chunk]).float()
            total += F.cross_entropy(logits, flat_targets[start : start + token_chunk], reduction="sum").item()
        count += flat_targets.numel()
        if progress is not None:
            progress.update(batch.shape[0])
    if not math.isfinite(total):
        raise NonFiniteError("non-finite loss: the model produces NaN/inf logits on this data")
    return total, count


#: exp() of a mean NLL above this overflows float; such a model is broken anyway (ppl > 1e304).
_MAX_MEAN_NLL = 700.0


def perplexity(model, windows: torch.Tensor, batch_size: int = 4, progress=None) -> float:
    total, count = negative_log_likelihood(model, windows, batch_size, progress=progress)
    return math.exp(min(total / count, _MAX_MEAN_NLL))
