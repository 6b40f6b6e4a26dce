"""Export a dense model or a subnet to ONNX, validated against PyTorch, written atomically.

Two builders. ``direct`` (the default wherever the family supports it, :mod:`optimum_subnet.onnx.builder`)
writes the decoder graph straight from the weights and per-layer shapes: GroupQueryAttention with a
shared, preallocated KV buffer, SkipSimplifiedLayerNormalization, packed projections, nothing computed on
the host; it is what :class:`~optimum_subnet.runtime.generator.ORTGenerator` (and ``generate`` on CUDA) runs,
and builds a 7B shape in seconds. ``torch`` (the slower path, kept for other tasks and families) is
described below.

With ``builder="torch"``, dense models and subnets go through the same path: Optimum's PyTorch ->
ONNX exporter (``optimum.exporters.onnx.convert.export``, TorchScript-based) driven by an
``OnnxConfig`` whose dummy KV cache has each layer's own shape, then Optimum's post-processing
(tied-weight deduplication), then our validation: a prefill and a decode step run in ONNX Runtime
and in PyTorch on the same random tokens; the maximum absolute difference of the logits and of
every layer's present key/value is printed and written to ``validation.json``. An export outside
tolerance raises, and the output folder is not created (Optimum's own validation only warns).

We call the exporter below ``onnx_export_from_model`` because that entry point refuses model
classes defined outside ``transformers`` (our subnet class lives in ``optimum_subnet``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optimum_subnet.core.errors import SubnetError

logger = logging.getLogger(__name__)

TASKS = ("text-generation-with-past", "text-generation")
BUILDERS = ("direct", "torch")
#: Default |ONNX - PyTorch| tolerance on logits and KV values, per export dtype.
DEFAULT_ATOL = {"fp32": 1e-3, "fp16": 5e-2}
EXPORT_CONFIG_NAME = "export_config.json"
#: torch's (TorchScript) exporter handles scaled_dot_product_attention, which the models use, from opset 14 on
#: (measured: 11 and 13 fail, 14 to 23 export).
MIN_OPSET = 14
VALIDATION_NAME = "validation.json"
#: validation.json's entries, one per validated graph
GRAPH_KEYS = ("direct", "unfused", "fused")


@dataclass
class OnnxExportConfig:
    """How to export (saved as ``export_config.json`` in the ONNX folder)."""

    task: str = "text-generation-with-past"
    dtype: str = "fp32"
    device: str = "cpu"
    opset: int | None = None
    atol: float | None = None
    validate: bool = True
    fuse_attention: bool = False
    #: ``direct`` (graph written from the weights), ``torch`` (Optimum's exporter), None: direct where the
    #: family, task and dtype allow it, else torch
    builder: str | None = None
    validation_batch_size: int = 2
    validation_sequence_length: int = 16

    def __post_init__(self):
        if self.task not in TASKS:
            raise SubnetError(f"unsupported task {self.task!r}; use one of {', '.join(TASKS)}")
        if self.dtype not in DEFAULT_ATOL:
            raise SubnetError(f"unsupported export dtype {self.dtype!r}; use fp32 or fp16")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SubnetError(f"unknown export device {self.device!r}; use cpu or cuda")
        if self.dtype == "fp16" and self.device == "cpu":
            raise SubnetError('an fp16 export runs on a GPU: pass device="cuda" (or export fp32 on cpu)')
        if self.builder is not None and self.builder not in BUILDERS:
            raise SubnetError(f"unknown ONNX builder {self.builder!r}; use direct or torch")
        if self.builder == "direct" and self.task != "text-generation-with-past":
            raise SubnetError('the direct builder writes a decoder with a KV cache: use task '
                              '"text-generation-with-past" or builder="torch"')
        if self.builder == "direct" and self.dtype == "fp32" and self.device != "cpu":
            raise SubnetError('GroupQueryAttention runs in fp16 on CUDA: export with dtype="fp16" for device="cuda" '
                              '(fp32 graphs run on the CPU: device="cpu")')
        # checked here, before any export work: a bad tolerance used to fail only after exporting
        if self.atol is not None and (isinstance(self.atol, bool) or not isinstance(self.atol, (int, float))
                                      or not math.isfinite(self.atol) or self.atol <= 0):
            raise SubnetError(f"the validation tolerance atol must be a positive finite number, got {self.atol!r}")
        if self.opset is not None:
            newest = max_opset()
            if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= newest:
                raise SubnetError(f"ONNX opset {self.opset!r} is not supported: use {MIN_OPSET} to {newest} "
                                  f"(below {MIN_OPSET} torch cannot export scaled dot-product attention)")
        for name, value, least in (("validation_batch_size", self.validation_batch_size, 1),
                                   ("validation_sequence_length", self.validation_sequence_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SubnetError(f"{name} must be an integer >= {least}, got {value!r}")

    @property
    def tolerance(self) -> float:
        return self.atol if self.atol is not None else DEFAULT_ATOL[self.dtype]

    @property
    def provider(self) -> str:
        return "CPUExecutionProvider" if self.device == "cpu" else "CUDAExecutionProvider"

    def resolved_builder(self, model_config) -> str:
        """The builder this export uses for ``model_config`` (refusing ``direct`` where it cannot)."""
        from optimum_subnet.onnx.builder.decoder import check_buildable

        if self.builder == "torch":
            return "torch"
        if self.builder == "direct":
            check_buildable(model_config)
            return "direct"
        reason = None
        if self.task != "text-generation-with-past":
            reason = f"task {self.task}"
        elif self.dtype == "fp32" and self.device != "cpu":
            reason = "fp32 on CUDA"
        else:
            try:
                check_buildable(model_config)
            except SubnetError as e:
                reason = str(e)
        if reason:
            logger.info("Exporting with the torch exporter (slower decode path): %s", reason)
            return "torch"
        return "direct"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        from optimum_subnet.core.files import write_json

        write_json(Path(folder) / EXPORT_CONFIG_NAME, self.to_dict())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "OnnxExportConfig":
        from optimum_subnet.core.files import read_json

        return cls(**read_json(Path(folder) / EXPORT_CONFIG_NAME))


def max_opset() -> int:
    """The newest ONNX opset this torch exports to."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_MAX_OPSET", 20))


def check_provider(provider: str) -> None:
    """Refuse an execution provider this onnxruntime build lacks, naming the fix."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SubnetError("onnxruntime is not installed: pip install 'optimum-subnet[onnxruntime]'") from None
    if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()  # finds the CUDA libraries that torch brings (onnxruntime-gpu >= 1.21)
        except Exception:  # noqa: BLE001 - best effort; the provider check below decides
            pass
    if provider not in ort.get_available_providers():
        hint = ("install onnxruntime-gpu instead of onnxruntime (pip uninstall onnxruntime && pip install "
                "'optimum-subnet[onnxruntime-gpu]')" if provider == "CUDAExecutionProvider" else "reinstall onnxruntime")
        raise SubnetError(f"{provider} is not available in this onnxruntime build: {hint}")


def _onnx_config_for(model, task: str, dtype: str = "fp32"):
    """The family's Optimum export config with per-layer KV shapes (dense models and subnets alike)."""
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.onnx.config import per_layer_onnx_config

    try:
        adapter = get_adapter_for_subnet(model.config)
    except SubnetError as e:
        raise SubnetError(f"cannot export: {e}") from None
    base_task = task.replace("-with-past", "")
    use_past = task.endswith("-with-past")
    cls = per_layer_onnx_config(adapter.onnx_config)
    if getattr(model.config, "primal_attention", None):  # primal layers: their running sums as past / present
        from optimum_subnet.onnx.primal import primal_onnx_config

        cls = primal_onnx_config(adapter.onnx_config)
    # float_dtype: the dummy KV cache must have the export dtype, or the trace mixes fp32 and fp16
    return cls(model.config, task=base_task, use_past=use_past, use_past_in_inputs=use_past, float_dtype=dtype)


def export_onnx(model_or_path, output: str | os.PathLike, config: OnnxExportConfig | None = None, *,
                tokenizer=None, overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Export ``model_or_path`` (a loaded model, a folder, or an alias) to ``output``; returns the folder.

    The folder holds ``model.onnx`` (+ external data when large), ``config.json``, the generation
    config, the tokenizer, ``export_config.json`` and ``validation.json``. The direct builder (default
    where supported) writes the fused decoder graph from the weights; with ``builder="torch"`` and
    ``config.fuse_attention`` the traced graph's attention is rewritten into
    ``com.microsoft::GroupQueryAttention`` (see :mod:`optimum_subnet.onnx.fusion`) and the fused graph
    is validated too.
    """
    import torch

    from optimum_subnet.loading import load_model, resolve_device
    from optimum_subnet.core.files import atomic_output_dir, check_output_dir

    config = config or OnnxExportConfig()
    inputs = [model_or_path] if isinstance(model_or_path, (str, os.PathLike)) and Path(model_or_path).exists() else []
    check_output_dir(output, overwrite, protected=inputs)
    check_provider(config.provider)
    device = resolve_device(config.device)
    if isinstance(model_or_path, (str, os.PathLike)):
        model, loaded_tokenizer = load_model(str(model_or_path), dtype="float32", trust_remote_code=trust_remote_code)
        tokenizer = tokenizer or loaded_tokenizer
    else:
        model = model_or_path
    if config.fuse_attention and getattr(model.config, "primal_attention", None):
        raise SubnetError("fused attention (GroupQueryAttention) is not available for models with Primal-Attention "
                          "layers; export without attention fusion")
    builder = config.resolved_builder(model.config)
    onnx_config = _onnx_config_for(model, config.task, config.dtype) if builder == "torch" else None
    torch_dtype = torch.float16 if config.dtype == "fp16" else torch.float32
    model = model.to(device=device, dtype=torch_dtype).eval()

    with atomic_output_dir(output, overwrite, protected=inputs) as tmp:
        start = time.perf_counter()
        if builder == "direct":
            from optimum_subnet.onnx.builder import BuildConfig, build_decoder

            build = build_decoder(model, model.config, tmp, BuildConfig(dtype=config.dtype,
                                                                        opset=config.opset or 17))
        else:
            _export_graph(model, onnx_config, tmp, config)
        export_seconds = time.perf_counter() - start
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)
        report: dict[str, Any] = {"builder": builder, "export_seconds": export_seconds}
        if builder == "direct":
            report["build"] = build
            if config.validate:
                from optimum_subnet.onnx.builder.validate import validate_direct

                report["direct"] = validate_direct(model, tmp / "model.onnx", config)
        elif config.validate:
            report["unfused"] = validate_onnx(model, tmp / "model.onnx", config)
        if config.fuse_attention and builder == "torch":
            from optimum_subnet.onnx.fusion import fuse_group_query_attention

            unfused = tmp / "model_unfused.onnx"
            os.replace(tmp / "model.onnx", unfused)
            _move_external_data(tmp, "model.onnx", "model_unfused.onnx")
            summary = fuse_group_query_attention(unfused, tmp / "model.onnx", model.config)
            report["fusion"] = summary
            if config.validate:
                report["fused"] = validate_onnx(model, tmp / "model.onnx", config)
            _remove_model(tmp, "model_unfused.onnx")
        from optimum_subnet.core.files import write_json

        write_json(tmp / VALIDATION_NAME, report)
        for key in GRAPH_KEYS:
            if key in report and not report[key]["passed"]:
                raise SubnetError(
                    f"ONNX export validation failed ({key} graph): max |logits diff| {report[key]['max_abs_diff']:.3g} "
                    f"exceeds atol {config.tolerance:g}; nothing was written"
                )
    logger.info("Exported %s to %s", model.config.model_type, output)
    return Path(output)


def _export_graph(model, onnx_config, folder: Path, config: OnnxExportConfig) -> None:
    import torch
    from optimum.exporters.onnx.convert import export

    opset = config.opset or onnx_config.DEFAULT_ONNX_OPSET
    with torch.no_grad():
        export(model, onnx_config, folder / "model.onnx", opset=opset, device=str(model.device),
               dtype=config.dtype)
    try:  # deduplicate tied embedding / LM head initializers, as optimum-cli export does
        onnx_config.post_process_exported_models(folder, {"model": (model, onnx_config)}, ["model.onnx"])
    except Exception as e:  # noqa: BLE001 - post-processing is an optimization, not correctness
        logger.warning("ONNX post-processing skipped: %s", e)


def _move_external_data(folder: Path, old: str, new: str) -> None:
    """Rewrite an ONNX file's external-data references after a rename (large models only)."""
    import onnx

    path = folder / new
    proto = onnx.load(str(path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return
    proto = onnx.load(str(path), load_external_data=True)
    for data_file in folder.glob(f"{old}_data*"):
        data_file.unlink()
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{new}_data")


def _remove_model(folder: Path, name: str) -> None:
    (folder / name).unlink(missing_ok=True)
    for data_file in folder.glob(f"{name}_data*"):
        data_file.unlink()


# --------------------------------------------------------------------------------------------- validation
def validate_onnx(model, onnx_path: Path, config: OnnxExportConfig, seed: int = 0) -> dict[str, Any]:
    """Run a prefill and a decode step in ONNX Runtime and in PyTorch; compare logits and KV per layer."""
    import onnxruntime as ort

    providers = [config.provider] + (["CPUExecutionProvider"] if config.provider != "CPUExecutionProvider" else [])
    try:
        return _validate(model, onnx_path, config, seed, ort.InferenceSession(str(onnx_path), providers=providers))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.RuntimeException) as e:
        raise SubnetError(f"exported graph {onnx_path.name} does not run in onnxruntime: {str(e).splitlines()[0]}") from None


def _validate(model, onnx_path: Path, config: OnnxExportConfig, seed: int, session) -> dict[str, Any]:
    import numpy as np
    import torch

    input_names = {i.name for i in session.get_inputs()}
    shapes = {i.name: i.shape for i in session.get_inputs()}
    np_dtype, prompt, next_token = validation_inputs(model, config, seed)
    length = config.validation_sequence_length
    kv_names = sorted((n for n in input_names if n.startswith("past_key_values.")), key=_kv_order)
    use_past = bool(kv_names)

    def feeds(ids, past_len, past):
        total = past_len + ids.shape[1]
        data = {"input_ids": ids.numpy().astype(np.int64),
                "attention_mask": np.ones((ids.shape[0], total), dtype=np.int64)}
        if "position_ids" in input_names:
            data["position_ids"] = np.tile(np.arange(past_len, total, dtype=np.int64), (ids.shape[0], 1))
        for name in kv_names:
            if past is None and len(shapes[name]) == 3:  # a primal layer's running sum: zeros, float32
                data[name] = np.zeros((ids.shape[0], *shapes[name][1:]), dtype=np.float32)
            elif past is None:
                heads, head_dim = shapes[name][1], shapes[name][3]
                data[name] = np.zeros((ids.shape[0], heads, 0, head_dim), dtype=np_dtype)
            else:
                data[name] = past[name]
        return {k: v for k, v in data.items() if k in input_names}

    steps: list[dict[str, Any]] = []
    with torch.no_grad():
        ref = model(prompt.to(model.device), use_cache=use_past)
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(prompt, 0, None))))
        steps.append(_compare("prefill", ref, out, kv_names))
        if use_past:
            past = {name.replace("present.", "past_key_values."): value for name, value in out.items()
                    if name.startswith("present.")}
            ref2 = model(next_token.to(model.device), past_key_values=ref.past_key_values, use_cache=True)
            out2 = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(next_token, length, past))))
            steps.append(_compare("decode", ref2, out2, kv_names))
    return validation_result(session, config, steps)


def validation_inputs(model, config: OnnxExportConfig, seed: int):
    """What every validation feeds both runtimes: ``(numpy KV dtype, prompt, next token)``, the
    prompt ``validation_batch_size x validation_sequence_length`` random ids (above the special ids)
    and one more token per row, drawn from ``seed``."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    batch, length = config.validation_batch_size, config.validation_sequence_length
    vocab = model.config.vocab_size
    prompt = torch.randint(3, vocab, (batch, length), generator=generator)
    next_token = torch.randint(3, vocab, (batch, 1), generator=generator)
    return (np.float16 if config.dtype == "fp16" else np.float32), prompt, next_token


def validation_result(session, config: OnnxExportConfig, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``validation.json`` record of compared ``steps`` (prefill, decode), logged; passed when the
    worst difference is within ``config.tolerance``."""
    worst = max(step["max_abs_diff"] for step in steps)
    result = {"provider": session.get_providers()[0], "atol": config.tolerance, "max_abs_diff": worst,
              "passed": bool(worst <= config.tolerance), "steps": steps}
    for step in steps:
        logger.info("validation %-7s max |logits diff| %.3g, max |KV diff| %.3g (atol %g) on %s", step["step"],
                    step["logits_max_abs_diff"], step.get("kv_max_abs_diff", 0.0), config.tolerance, result["provider"])
    return result


def _kv_order(name: str) -> tuple[int, int]:
    parts = name.split(".")
    return int(parts[1]), 0 if parts[2] in ("key", "query_sum") else 1


def _compare(step: str, ref, out: dict, kv_names: list[str]) -> dict[str, Any]:
    import numpy as np

    logits_ref = ref.logits.float().cpu().numpy()
    logits_diff = float(np.abs(out["logits"].astype(np.float32) - logits_ref).max())
    entry: dict[str, Any] = {"step": step, "logits_max_abs_diff": logits_diff, "layers": []}
    kv_worst = 0.0
    if kv_names:
        cache = ref.past_key_values
        for index in sorted({_kv_order(name)[0] for name in kv_names}):
            if f"present.{index}.query_sum" in out:  # a primal layer: its running sums
                from optimum_subnet.onnx.primal import compare_state

                entry["layers"].append(compare_state(cache, index, out))
                kv_worst = max(kv_worst, entry["layers"][-1]["state_max_scaled_diff"])
                continue
            keys, values = _layer_kv(cache, index)
            # a sliding-window layer's PyTorch cache keeps only the last window - 1 positions, while the
            # graph returns every position (its mask applies the window): compare the positions both hold
            kept = keys.shape[2]
            key_diff = float(np.abs(out[f"present.{index}.key"][:, :, -kept:].astype(np.float32) - keys).max())
            value_diff = float(np.abs(out[f"present.{index}.value"][:, :, -kept:].astype(np.float32) - values).max())
            entry["layers"].append({"layer": index, "key_max_abs_diff": key_diff, "value_max_abs_diff": value_diff,
                                    "shape": list(out[f"present.{index}.key"].shape)})
            kv_worst = max(kv_worst, key_diff, value_diff)
        entry["kv_max_abs_diff"] = kv_worst
    entry["max_abs_diff"] = max(logits_diff, kv_worst)
    return entry


def _layer_kv(cache, index: int):
    """(keys, values) of one layer from a transformers cache object or legacy tuple, as float32 numpy."""
    if hasattr(cache, "layers"):
        layer = cache.layers[index]
        keys, values = layer.keys, layer.values
    elif hasattr(cache, "key_cache"):
        keys, values = cache.key_cache[index], cache.value_cache[index]
    else:
        keys, values = cache[index]
    return keys.float().cpu().numpy(), values.float().cpu().numpy()


def read_validation(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / VALIDATION_NAME).read_text())


__all__ = ["OnnxExportConfig", "check_provider", "export_onnx", "read_validation", "validate_onnx"]
