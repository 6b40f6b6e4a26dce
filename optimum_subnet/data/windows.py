"""Token windows for calibration (random, seeded) and evaluation (contiguous, non-overlapping)."""

from __future__ import annotations

import torch

from optimum_subnet.core.errors import DataError


def tokenize_stream(texts: list[str], tokenizer) -> torch.Tensor:
    """All texts joined by blank lines and tokenized once, without special tokens (1-D LongTensor)."""
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def bos_of(tokenizer) -> int | None:
    """The BOS id every window starts with, for tokenizers that put one before every text (Gemma: its
    quality collapses without it, perplexity 43.9 vs 18.7 on the same Wikipedia windows); ``None`` for
    tokenizers that add none (SmolLM2, Qwen)."""
    if getattr(tokenizer, "add_bos_token", False) and getattr(tokenizer, "bos_token_id", None) is not None:
        return int(tokenizer.bos_token_id)
    return None


def _with_bos(windows: torch.Tensor, bos: int | None) -> torch.Tensor:
    if bos is None:
        return windows
    return torch.cat([windows.new_full((windows.shape[0], 1), bos), windows], dim=1)


def check_sequence_length(seq_len: int, max_positions: int | None) -> None:
    if seq_len < 2:
        raise DataError(f"sequence length must be at least 2 tokens, got {seq_len}")
    if max_positions and seq_len > max_positions:
        raise DataError(f"sequence length {seq_len} exceeds the model's limit of {max_positions} positions")


def calibration_windows(stream: torch.Tensor, num_windows: int, seq_len: int, seed: int,
                        bos: int | None = None) -> torch.Tensor:
    """``num_windows`` windows of ``seq_len`` tokens at random (seeded) offsets: (num_windows, seq_len).
    With ``bos`` each window is that token followed by ``seq_len - 1`` tokens of text."""
    text_len = seq_len - (bos is not None)
    return windows_at(stream, calibration_starts(stream.numel(), num_windows, text_len, seed), text_len, bos)


def calibration_starts(stream_len: int, num_windows: int, text_len: int, seed: int) -> list[int]:
    """The stream offsets :func:`calibration_windows` cuts its windows at."""
    if num_windows < 1:
        raise DataError(f"need at least one calibration window, got {num_windows}")
    if stream_len < text_len:
        raise DataError(f"calibration data too short: {stream_len} tokens, need at least {text_len}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, stream_len - text_len + 1, (num_windows,), generator=generator).tolist()


def disjoint_starts(stream_len: int, num_windows: int, text_len: int, seed: int,
                    avoid: list[tuple[int, int]]) -> list[int]:
    """``num_windows`` random offsets whose windows overlap neither each other nor any ``(start, length)``
    span of ``avoid`` (windows another stage saw)."""
    taken = sorted(avoid)
    generator = torch.Generator().manual_seed(seed)
    starts: list[int] = []
    for _ in range(100):
        if len(starts) == num_windows or stream_len < text_len:
            break
        for s in torch.randint(0, stream_len - text_len + 1, (4 * num_windows,), generator=generator).tolist():
            if all(s + text_len <= a or a + n <= s for a, n in taken):
                starts.append(s)
                taken.append((s, text_len))
                if len(starts) == num_windows:
                    break
    if len(starts) < num_windows:
        raise DataError(f"calibration data too short for {num_windows} windows of {text_len} tokens apart from the "
                        "other stages' windows; use fewer or shorter selection windows")
    return starts


def windows_at(stream: torch.Tensor, starts: list[int], text_len: int, bos: int | None = None) -> torch.Tensor:
    """Windows of ``text_len`` tokens at ``starts`` (each after ``bos``, when given)."""
    return _with_bos(torch.stack([stream[s : s + text_len] for s in starts]), bos)


def evaluation_windows(stream: torch.Tensor, seq_len: int, max_windows: int | None = None,
                       bos: int | None = None) -> torch.Tensor:
    """Non-overlapping windows covering the stream; with ``max_windows``, that many evenly spaced ones.
    With ``bos`` each window is that token followed by ``seq_len - 1`` tokens of text."""
    text_len = seq_len - (bos is not None)
    total = stream.numel() // text_len
    if total < 1:
        raise DataError(f"evaluation data too short: {stream.numel()} tokens, need at least {text_len}")
    windows = stream[: total * text_len].view(total, text_len)
    if max_windows and max_windows < total:
        index = torch.linspace(0, total - 1, max_windows).round().long().unique()
        windows = windows[index]
    return _with_bos(windows, bos)
