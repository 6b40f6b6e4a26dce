"""Comparing what two computation paths produce.

Two runs that do the same operations in the same order (same code, same shapes, same inputs, same
machine and thread count) give bitwise equal results, and the tests compare those exactly. Two
*different* paths (chunked vs whole, SDPA vs eager, ONNX Runtime vs PyTorch, a static vs a dynamic
KV cache, batched vs single, one kernel blocking vs another) add the same products in other orders;
how far apart that leaves them depends on the CPU's matrix kernels and the thread count. Those are
compared with a tolerance scaled to the magnitude of the values, and greedy tokens only after
checking that no step is a near tie that such rounding could flip.
"""

from __future__ import annotations

import torch


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """``|actual - expected| <= rel * max|expected|`` everywhere (an absolute bound stated relative to
    the values' scale: rounding differences of a sum grow with its terms, not with each entry)."""
    atol = rel * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def assert_same_greedy_tokens(got: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor,
                              rel: float = 1e-4) -> None:
    """Greedy tokens of two computation paths are equal, and the comparison cannot hinge on rounding.

    ``got`` and ``expected``: ``(batch, n)`` token ids (prompt included or not, the same way);
    ``logits``: ``(batch, k, vocab)``, the reference model's logits (computed in one full forward over
    ``expected``) that chose the last ``k`` tokens of ``expected``. Two fp32 paths differ by far less
    than ``rel * max|logits|`` (observed: a few 1e-7 relative); where the top-2 margin of every step
    exceeds twice that, neither path can pick another token, so exact equality is guaranteed on any
    CPU. A near tie fails the check instead of making the test depend on the machine: then change the
    test's seed or prompt.
    """
    bound = rel * logits.abs().max().item()
    top2 = logits.float().topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    where = divmod(int(margin.argmin()), margin.shape[1])  # (sequence, step)
    assert margin.min().item() > 2 * bound, (
        f"near tie: top-2 logit margin {margin.min().item():.3g} at (sequence, step) {where} is within twice "
        f"the rounding bound {bound:.3g}; choose another seed or prompt for this test")
    k = logits.shape[1]
    assert torch.equal(logits.argmax(-1).to(expected.device), expected[:, -k:]), \
        "the reference's tokens are not the argmax of its own logits"
    assert torch.equal(got.to(expected.device), expected), (got, expected)


def teacher_forced_logits(model, sequences: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """``(batch, new_tokens, vocab)``: logits of one full forward over ``sequences`` (prompt + generated)
    at the positions that predicted the last ``new_tokens`` tokens."""
    with torch.no_grad():
        logits = model(sequences).logits
    return logits[:, -new_tokens - 1:-1]
