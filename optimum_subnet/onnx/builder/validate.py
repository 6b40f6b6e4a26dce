"""Validate a directly built decoder graph against the PyTorch model it came from.

A prefill of ``validation_batch_size`` random prompts of ``validation_sequence_length`` tokens (logits at
every position, every layer's keys/values), then one decode step into the same KV buffers, in ONNX
Runtime and in PyTorch; the maximum absolute differences go to ``validation.json`` as for torch exports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def kv_shapes(session) -> dict[str, tuple[int, int]]:
    """``past_key_values.{i}.key`` -> (KV heads, head size), from the session's inputs."""
    return {i.name: (i.shape[1], i.shape[3]) for i in session.get_inputs() if i.name.startswith("past_key_values.")}


def run_direct(session, input_ids: np.ndarray, positions: np.ndarray, total: int, logits_index: np.ndarray,
               past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One plain ``session.run`` of a direct graph (numpy in, numpy out; no shared buffers)."""
    feeds = {"input_ids": input_ids.astype(np.int64), "position_ids": positions.astype(np.int64),
             "total_sequence_length": np.array(total, np.int32), "logits_index": logits_index.astype(np.int64),
             **past}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def validate_direct(model, onnx_path: Path, config, seed: int = 0) -> dict[str, Any]:
    """Compare the graph at ``onnx_path`` with ``model`` (see the module docstring); ``config`` is the
    export's :class:`~optimum_subnet.onnx.export.OnnxExportConfig`."""
    import onnxruntime as ort
    import torch

    from optimum_subnet.core.errors import SubnetError
    from optimum_subnet.onnx.export import _layer_kv, validation_inputs, validation_result

    providers = [config.provider] + (["CPUExecutionProvider"] if config.provider != "CPUExecutionProvider" else [])
    try:
        session = ort.InferenceSession(str(onnx_path), providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
        raise SubnetError(f"built graph {onnx_path.name} does not load in onnxruntime: {str(e).splitlines()[0]}") \
            from None
    np_dtype, prompt, next_token = validation_inputs(model, config, seed)
    batch, length = config.validation_batch_size, config.validation_sequence_length
    capacity = length + 1
    shapes = kv_shapes(session)
    past = {name: np.zeros((batch, heads, capacity, dim), np_dtype) for name, (heads, dim) in shapes.items()}
    positions = np.tile(np.arange(length), (batch, 1))
    steps = []
    with torch.no_grad():
        ref = model(prompt.to(model.device), use_cache=True)
        out = run_direct(session, prompt.numpy(), positions, length, np.arange(batch * length).reshape(batch, length),
                         past)
        steps.append(_compare("prefill", ref.logits, ref.past_key_values, out, length, _layer_kv))
        past = {name: out[name.replace("past_key_values.", "present.")] for name in shapes}
        ref2 = model(next_token.to(model.device), past_key_values=ref.past_key_values, use_cache=True)
        out2 = run_direct(session, next_token.numpy(), np.full((batch, 1), length), capacity,
                          np.arange(batch).reshape(batch, 1), past)
        steps.append(_compare("decode", ref2.logits, ref2.past_key_values, out2, capacity, _layer_kv))
    return validation_result(session, config, steps)


def _compare(step: str, logits, cache, out: dict, filled: int, layer_kv) -> dict[str, Any]:
    reference = logits.float().cpu().numpy()
    logits_diff = float(np.abs(out["logits"].astype(np.float32) - reference).max())
    entry: dict[str, Any] = {"step": step, "logits_max_abs_diff": logits_diff, "layers": []}
    kv_worst = 0.0
    index = 0
    while f"present.{index}.key" in out:
        keys, values = layer_kv(cache, index)
        # a sliding-window layer's PyTorch cache keeps only its last positions: compare those
        kept = keys.shape[2]
        got_k = out[f"present.{index}.key"][:, :, filled - kept:filled].astype(np.float32)
        got_v = out[f"present.{index}.value"][:, :, filled - kept:filled].astype(np.float32)
        key_diff, value_diff = float(np.abs(got_k - keys).max()), float(np.abs(got_v - values).max())
        entry["layers"].append({"layer": index, "key_max_abs_diff": key_diff, "value_max_abs_diff": value_diff,
                                "shape": list(out[f"present.{index}.key"].shape)})
        kv_worst = max(kv_worst, key_diff, value_diff)
        index += 1
    entry["kv_max_abs_diff"] = kv_worst
    entry["max_abs_diff"] = max(logits_diff, kv_worst)
    return entry
