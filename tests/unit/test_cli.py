"""CLI smoke tests through subprocess, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CLI = [sys.executable, "-m", "optimum.commands.optimum_cli"]


def run(*args, env_extra=None, timeout=600):
    env = dict(os.environ, OPTIMUM_SUBNET_NO_PROGRESS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_help_lists_subcommands():
    out = run("subnet", "--help")
    assert out.returncode == 0
    assert "search" in out.stdout and "evaluate" in out.stdout


def _error_line(out):
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model-alias", "--target-ratio", "0.8"], "unknown model"),
        (["--model", "/definitely/missing", "--target-ratio", "0.8"], "does not exist"),
        (["--target-ratio", "0"], "--target-ratio must be in (0, 1]"),
        (["--target-ratio", "1.5"], "--target-ratio must be in (0, 1]"),
        (["--target-ratio", "0.8", "--device", "cuda"], None),
    ],
)
def test_bad_inputs_fail_with_one_line(tmp_path, args, message):
    out_dir = tmp_path / "out"
    out = run("subnet", "search", "--output", str(out_dir), *args)
    if message is None:  # CUDA without a GPU: only meaningful on a CPU-only machine
        import torch

        if torch.cuda.is_available():
            pytest.skip("machine has a GPU")
        message = "no GPU is available"
    assert out.returncode == 2
    assert message in _error_line(out)
    assert not out_dir.exists()


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config

    model_dir = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(model_dir)
    out = run("subnet", "search", "--model", str(model_dir), "--target-ratio", "0.8", "--output", str(tmp_path / "o"))
    assert out.returncode == 2 and "unsupported architecture 'gpt2'" in _error_line(out)


def test_existing_output_folder_is_refused(tmp_path, tiny_model_dir):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    out = run("subnet", "search", "--model", str(tiny_model_dir), "--target-ratio", "0.8", "--output", str(out_dir))
    assert out.returncode == 2 and "--overwrite" in _error_line(out)
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_empty_calibration_data(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = run("subnet", "search", "--model", str(tiny_model_dir), "--target-ratio", "0.8", "--output",
              str(tmp_path / "o"), "--calibration-dataset", str(empty), "--preset", "fast", "--seq-len", "32",
              "--eval-seq-len", "32")
    assert out.returncode == 2 and "empty" in _error_line(out)
    assert not (tmp_path / "o").exists()


def test_search_and_evaluate_end_to_end_on_tiny_model(tmp_path, tiny_model_dir, text_files):
    cal, ev = text_files
    out_dir = tmp_path / "subnet"
    common = ["--calibration-dataset", str(cal), "--eval-dataset", str(ev), "--seq-len", "32", "--num-samples", "8",
              "--eval-seq-len", "32", "--eval-max-windows", "4"]
    out = run("subnet", "search", "--model", str(tiny_model_dir), "--target-ratio", "0.7", "--output", str(out_dir),
              "--preset", "fast", "--generations", "2", "--population", "6", "--device", "cpu", *common)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((out_dir / "report.json").read_text())
    assert abs(report["subnet"]["inheriting_ratio"] - 0.7) <= 0.01 * 0.7
    for name in ("config.json", "model.safetensors", "subnet_config.json", "report.md", "search_progress.png",
                 "modeling_subnet_llama.py", "configuration_subnet_llama.py", "subnet_optimization.json"):
        assert (out_dir / name).is_file(), name
    assert "final subnet" in out.stdout
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".subnet.tmp")]

    result_file = tmp_path / "eval.json"
    out = run("subnet", "evaluate", "--model", str(out_dir), "--dataset", str(ev), "--seq-len", "32", "64",
              "--output", str(result_file), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(result_file.read_text())
    assert set(results["ppl"]) == {f"{ev}@32", f"{ev}@64"}
    assert results["params"] == report["subnet"]["params"]
