"""Token windows for calibration (random, seeded) and evaluation (contiguous, non-overlapping)."""

from __future__ import annotations

import torch

from optimum_subnet.core.errors import DataError


def tokenize_stream(texts: list[str], tokenizer) -> torch.Tensor:
    """All texts joined by blank lines and tokenized once, without special tokens (1-D LongTensor)."""
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def check_sequence_length(seq_len: int, max_positions: int | None) -> None:
    if seq_len < 2:
        raise DataError(f"sequence length must be at least 2 tokens, got {seq_len}")
    if max_positions and seq_len > max_positions:
        raise DataError(f"sequence length {seq_len} exceeds the model's limit of {max_positions} positions")


def calibration_windows(stream: torch.Tensor, num_windows: int, seq_len: int, seed: int) -> torch.Tensor:
    """``num_windows`` windows of ``seq_len`` tokens at random (seeded) offsets: (num_windows, seq_len)."""
    if num_windows < 1:
        raise DataError(f"need at least one calibration window, got {num_windows}")
    if stream.numel() < seq_len:
        raise DataError(f"calibration data too short: {stream.numel()} tokens, need at least {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len + 1, (num_windows,), generator=generator)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def evaluation_windows(stream: torch.Tensor, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows covering the stream; with ``max_windows``, that many evenly spaced ones."""
    total = stream.numel() // seq_len
    if total < 1:
        raise DataError(f"evaluation data too short: {stream.numel()} tokens, need at least {seq_len}")
    windows = stream[: total * seq_len].view(total, seq_len)
    if max_windows and max_windows < total:
        index = torch.linspace(0, total - 1, max_windows).round().long().unique()
        windows = windows[index]
    return windows
