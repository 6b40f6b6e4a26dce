"""Loading exported folders for inference, with one-line errors for the usual mistakes."""

from __future__ import annotations

import os
from pathlib import Path

from optimum_subnet.core.errors import SubnetError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def load_ort_model(folder: str | os.PathLike, provider: str = "cpu", use_io_binding: bool | None = None,
                   file_name: str | None = None):
    """An :class:`ORTSubnetModelForCausalLM` for an exported folder (dense or subnet)."""
    from optimum_subnet.onnx.export import check_provider
    from optimum_subnet.runtime.modeling import ORTSubnetModelForCausalLM

    path = Path(folder)
    if not path.is_dir():
        raise SubnetError(f"ONNX folder {path} does not exist")
    onnx_files = sorted(p.name for p in path.glob("*.onnx"))
    if not onnx_files:
        raise SubnetError(f"{path} holds no .onnx file: export one with optimum-cli subnet export")
    if not (path / "config.json").is_file():
        raise SubnetError(f"ONNX folder {path} has no config.json: re-export it with optimum-cli subnet export "
                          "(which writes the config beside model.onnx)")
    ort_provider = PROVIDERS.get(provider, provider)
    check_provider(ort_provider)
    if file_name is None:
        file_name = "model.onnx" if "model.onnx" in onnx_files else onnx_files[0]
    return ORTSubnetModelForCausalLM.from_pretrained(path, file_name=file_name, provider=ort_provider,
                                                     use_io_binding=use_io_binding)


def generate_text(folder: str | os.PathLike, prompt: str, max_new_tokens: int = 32, provider: str = "cpu",
                  use_io_binding: bool | None = None) -> str:
    """Greedy completion of ``prompt``: ONNX Runtime for an ONNX folder, PyTorch for a model folder."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if path.is_dir() and any(path.glob("*.onnx")):
        model = load_ort_model(path, provider, use_io_binding)
    else:
        from optimum_subnet.loading import load_model

        model, _ = load_model(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(path if path.is_dir() else str(folder))
    encoded = tokenizer(prompt, return_tensors="pt")
    inputs = {k: encoded[k].to(model.device) for k in ("input_ids", "attention_mask") if k in encoded}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0], skip_special_tokens=True)
