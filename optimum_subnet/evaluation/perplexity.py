"""Perplexity, computed in chunks so the full (tokens x vocabulary) logits never exist at once."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from optimum_subnet.core.errors import NonFiniteError, SubnetError


def summed_nll(hidden: torch.Tensor, targets: torch.Tensor, logits_of, token_chunk: int = 2048) -> float:
    """Sum of the NLL of ``targets`` given the final ``hidden`` states (same leading shape), the logits
    computed by ``logits_of`` ``token_chunk`` tokens at a time."""
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    total = 0.0
    for start in range(0, flat_targets.numel(), token_chunk):
        logits = logits_of(flat_hidden[start : start + token_chunk]).float()
        total += F.cross_entropy(logits, flat_targets[start : start + token_chunk], reduction="sum").item()
    return total


@torch.no_grad()
def negative_log_likelihood(model, windows: torch.Tensor, batch_size: int = 4, token_chunk: int = 2048,
                            progress=None) -> tuple[float, int]:
    """Sum of next-token NLL over all windows and the number of predicted tokens."""
    from optimum_subnet.families import get_adapter_for_subnet

    device = next(model.parameters()).device
    adapter = get_adapter_for_subnet(model.config)
    total, count = 0.0, 0
    for batch in windows.split(max(1, batch_size)):
        batch = batch.to(device)
        hidden = adapter.final_hidden_states(model, batch)[:, :-1]
        total += summed_nll(hidden, batch[:, 1:], lambda h: adapter.logits(model, h), token_chunk)
        count += batch[:, 1:].numel()
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


def count_parameters(model) -> int:
    """Unique parameters (a tied LM head counts once, as in memory)."""
    return sum(p.numel() for p in model.parameters())


def evaluate_model(model_name_or_path: str, dataset: str = "enwiki-extract", seq_lens=(512,), max_windows=None,
                   batch_size: int = 4, text_column: str = "text", device: str = "auto", dtype: str = "float32",
                   trust_remote_code: bool = False, output: str | None = None,
                   faithfulness_baseline: str | None = None, faithfulness=None, tasks=None,
                   limit: int | float | None = None, zero_shot_batch_size: int = 16) -> dict:
    """Held-out perplexity of a model (dense or subnet) at one or more window lengths; with
    ``faithfulness_baseline`` (the dense model), also how closely the model's AtMan relevance maps
    follow the baseline's (``faithfulness``: a :class:`FaithfulnessConfig`); with ``tasks``,
    zero-shot accuracy through lm-eval (:mod:`optimum_subnet.evaluation.zeroshot`, ``limit`` documents per task)."""
    from optimum_subnet import data as data_lib
    from optimum_subnet.loading import load_model, resolve_device
    from optimum_subnet.core.progress import progress_bar

    checks = [  # before any model work
        (max_windows is None or _positive_int(max_windows),
         f"max_windows must be a positive integer (or None: every window), got {max_windows!r}"),
        (_positive_int(batch_size), f"batch_size must be a positive integer, got {batch_size!r}"),
        (_positive_int(zero_shot_batch_size),
         f"zero_shot_batch_size must be a positive integer, got {zero_shot_batch_size!r}"),
        (all(_positive_int(n) and n >= 2 for n in seq_lens),
         f"sequence lengths must be integers of at least 2 tokens, got {list(seq_lens)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise SubnetError(message)
    device = resolve_device(device)
    faith_prompts = None
    if faithfulness_baseline is not None:  # check the BoolQ data before any model work
        from optimum_subnet.core.config import FaithfulnessConfig
        from optimum_subnet.evaluation.faithfulness import boolq_path

        faithfulness = (faithfulness or FaithfulnessConfig()).validate()
        if faithfulness.prompts < 1:
            raise SubnetError("the faithfulness check needs at least one prompt")
        boolq_path()
    zero_shot_configs = None
    if tasks:  # check task names and data before the model loads
        from optimum_subnet.evaluation.zeroshot import parse_tasks, task_configs

        tasks = parse_tasks(tasks)
        if limit is not None and not limit > 0:
            raise SubnetError(f"the zero-shot limit must be a positive number of documents, got {limit}")
        zero_shot_configs = task_configs(tasks)
    model, tokenizer = load_model(model_name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device)
    positions = getattr(model.config, "max_position_embeddings", None)  # not `limit`: that is the zero-shot one
    for seq_len in seq_lens:
        data_lib.check_sequence_length(seq_len, positions)
    if faithfulness_baseline is not None:
        from optimum_subnet.evaluation.faithfulness import boolq_prompts

        faith_prompts = boolq_prompts(faithfulness.prompts, faithfulness.max_passage_chars, faithfulness.seed,
                                      tokenizer, min(faithfulness.max_tokens, positions or faithfulness.max_tokens))
    stream = data_lib.tokenize_stream(data_lib.load_texts(dataset, "evaluation", text_column), tokenizer)
    results = {"model": model_name_or_path, "params": count_parameters(model), "dataset": dataset,
               "description": data_lib.describe(dataset), "ppl": {}, "windows": {}}
    for seq_len in seq_lens:
        windows = data_lib.evaluation_windows(stream, seq_len, max_windows, data_lib.bos_of(tokenizer))
        with progress_bar(total=len(windows), desc=f"Perplexity @{seq_len}", unit="window") as bar:
            results["ppl"][f"{dataset}@{seq_len}"] = perplexity(model, windows, batch_size, progress=bar)
        results["windows"][f"{dataset}@{seq_len}"] = len(windows)
    if faithfulness_baseline is not None:
        from optimum_subnet.evaluation.faithfulness import faithfulness as faithfulness_of

        baseline, baseline_tokenizer = load_model(faithfulness_baseline, dtype=dtype,
                                                  trust_remote_code=trust_remote_code)
        baseline.to(device)
        results["faithfulness"] = faithfulness_of(baseline, model, tokenizer, faithfulness, faith_prompts,
                                                  reference_tokenizer=baseline_tokenizer)
        results["faithfulness"]["baseline"] = faithfulness_baseline
    if zero_shot_configs is not None:
        from optimum_subnet.evaluation.zeroshot import evaluate_zero_shot

        results["zero_shot"] = evaluate_zero_shot(model, tokenizer, tasks, limit=limit, batch_size=zero_shot_batch_size,
                                                  configs=zero_shot_configs)
    if output:
        from optimum_subnet.core.files import write_json, writing

        with writing(output):
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            write_json(output, results)
    return results


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_output_file(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse a results path before the evaluation: a folder, a symbolic link, or an existing file
    without ``overwrite``."""
    from optimum_subnet.core.errors import SubnetError

    path = Path(path)
    if path.is_symlink():
        raise SubnetError(f"output path {path} is a symbolic link; pass the real file instead")
    if path.is_dir():
        raise SubnetError(f"output path {path} is a folder; pass a file name such as {path / 'results.json'}")
    if path.exists() and not overwrite:
        raise SubnetError(f"output file {path} exists; pass overwrite=True to replace it")
    return path
