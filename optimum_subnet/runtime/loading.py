"""Loading exported folders for inference, with one-line errors for the usual mistakes."""

from __future__ import annotations

import os
import re
from pathlib import Path

from optimum_subnet.core.errors import SubnetError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def load_ort_model(folder: str | os.PathLike, provider: str = "cpu", use_io_binding: bool | None = None,
                   file_name: str | None = None):
    """An :class:`ORTSubnetModelForCausalLM` for an exported folder (dense or subnet)."""
    from optimum_subnet.onnx.export import check_provider
    from optimum_subnet.runtime.modeling import ORTSubnetModelForCausalLM

    path = Path(folder)
    file_name = onnx_file_name(path, file_name)
    ort_provider = PROVIDERS.get(provider, provider)
    check_provider(ort_provider)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph, InvalidProtobuf, NoModel, NoSuchFile

    try:
        return ORTSubnetModelForCausalLM.from_pretrained(path, file_name=file_name, provider=ort_provider,
                                                         use_io_binding=use_io_binding)
    except (InvalidProtobuf, InvalidGraph, NoModel, NoSuchFile) as e:
        raise SubnetError(_not_loadable(path / file_name, str(e))) from None


def onnx_file_name(path: Path, file_name: str | None = None) -> str:
    """The ONNX file of an exported folder to load (``model.onnx`` unless named), after checking that the
    folder is an export: it exists, holds an .onnx file and the config.json beside it."""
    if not path.is_dir():
        raise SubnetError(f"ONNX folder {path} does not exist")
    onnx_files = sorted(p.name for p in path.glob("*.onnx"))
    if not onnx_files:
        raise SubnetError(f"{path} holds no .onnx file: export one with optimum-cli subnet export")
    if not (path / "config.json").is_file():
        raise SubnetError(f"ONNX folder {path} has no config.json: re-export it with optimum-cli subnet export "
                          "(which writes the config beside model.onnx)")
    if file_name is None:
        file_name = "model.onnx" if "model.onnx" in onnx_files else onnx_files[0]
    return file_name


def _not_loadable(file: Path, detail: str) -> str:
    # ONNX Runtime says "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from F failed:REASON"
    reason = re.sub(r"^Load model from .* failed:\s*", "", detail.split(" : ")[-1].strip()).rstrip(".")
    return (f"{file} is not a loadable ONNX model ({reason}): it is damaged, cut short or of another format; "
            "export the model again")


def check_onnx_file(file: str | os.PathLike) -> None:
    """Refuse an ONNX file that does not parse as an ONNX model (cut short, another format) before any
    work; reads the graph only, not external weight data."""
    import onnx

    file = Path(file)
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors
        raise SubnetError(_not_loadable(file, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    if not proto.graph.node or not proto.opset_import:
        raise SubnetError(_not_loadable(file, "no graph"))


def _check_max_new_tokens(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise SubnetError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")


ENGINES = ("generator", "optimum")


def generate_text(folder: str | os.PathLike, prompt: str, max_new_tokens: int = 32, provider: str = "cpu",
                  use_io_binding: bool | None = None, engine: str = "generator") -> str:
    """Greedy completion of ``prompt``: ONNX Runtime for an ONNX folder, PyTorch for a model folder.

    ``engine="generator"`` (default) decodes a directly built graph with
    :class:`~optimum_subnet.runtime.generator.ORTGenerator` (CUDA graphs on CUDA) and refuses a torch
    export; ``engine="optimum"`` runs transformers' loop over Optimum's forward (the slower path, any export).
    """
    from optimum_subnet.loading import load_tokenizer

    _check_max_new_tokens(max_new_tokens)
    if engine not in ENGINES:
        raise SubnetError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    path = Path(folder)
    if path.is_dir() and any(path.glob("*.onnx")):
        file_name = onnx_file_name(path)  # the export's own files first, then its tokenizer, then the (slow) session
        if engine == "generator":
            from optimum_subnet.onnx.builder.decoder import read_graph_info

            try:
                direct = read_graph_info(path / file_name) is not None
            except Exception:  # noqa: BLE001 - unreadable: the session load below reports it
                direct = True
            if not direct:
                raise SubnetError(f"{path} was exported without the fused decoder graph: re-export it with "
                                  'builder="direct" (or use engine="optimum", the slower step-by-step path)')
        tokenizer = load_tokenizer(str(path))
        model = load_ort_model(path, provider, use_io_binding)
    else:
        from optimum_subnet.loading import load_model

        model, tokenizer = load_model(str(folder))
    encoded = tokenizer(prompt, return_tensors="pt")
    inputs = {k: encoded[k].to(model.device) for k in ("input_ids", "attention_mask") if k in encoded}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0], skip_special_tokens=True)
