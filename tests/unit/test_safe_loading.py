"""Safe loading: nothing unpickles, during a whole run or anywhere in the package's code."""

import ast
import pickle
from pathlib import Path

import pytest
import torch

from tests.bad_inputs import model_and_config, run_cli

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "optimum_subnet"


def test_package_code_never_unpickles():
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            elif isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("torch", "pickle", "dill", "joblib"):
                names = [f"{node.value.id}.{node.attr}"]
            offenders += [f"{file.name}: {n}" for n in names if n.split(".")[0] in ("pickle", "dill", "joblib")
                          or n in ("torch.load",)]
    assert offenders == []


def test_damaged_model_files_are_refused_before_loading(tiny_model_dir):
    """The library's own checks (what the CLI rows of the bad-input table go through), in its terms."""
    from optimum_subnet.core.errors import SubnetError
    from optimum_subnet.loading import load_model

    weights = tiny_model_dir / "model.safetensors"
    intact = weights.read_bytes()
    for damaged, reason in ((intact[: len(intact) // 2], "incomplete metadata"), (intact[:5], "header too small"),
                            (b"version https://git-lfs.github.com/spec/v1\n", "header too large")):
        weights.write_bytes(damaged)
        with pytest.raises(SubnetError, match=f"is not a readable safetensors file \\({reason}"):
            load_model(str(tiny_model_dir))
    weights.unlink()
    with pytest.raises(SubnetError, match="has no weights"):
        load_model(str(tiny_model_dir))
    weights.write_bytes(intact)
    (tiny_model_dir / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(SubnetError, match="has no loadable tokenizer"):
        load_model(str(tiny_model_dir))
    (tiny_model_dir / "config.json").write_text("{")
    with pytest.raises(SubnetError, match="config.json is not valid JSON"):
        load_model(str(tiny_model_dir))


def test_a_whole_run_never_unpickles_nor_runs_model_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIMUM_SUBNET_NO_PROGRESS", "1")
    model_and_config(tmp_path)

    def trap(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, trap)
    calls = []
    import transformers.dynamic_module_utils as dynamic

    original = dynamic.get_class_from_dynamic_module
    monkeypatch.setattr(dynamic, "get_class_from_dynamic_module",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    code, stderr = run_cli(["search", "--model", "tiny-llama", "--target-ratio", "0.7", "--config", "fast.json",
                            "--output", "out"])
    assert code == 0, stderr[-3000:]
    code, stderr = run_cli(["evaluate", "--model", "out", "--dataset", "cal.txt", "--seq-len", "32"])
    assert code == 0, stderr[-3000:]  # the saved subnet loads through the plugin, not its copied code
    assert calls == []
