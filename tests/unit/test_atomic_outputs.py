"""Atomic outputs: a failure at any point of a write leaves the old state or nothing, never half.

The CLI-level cases (disk full mid-save, Ctrl-C mid-save, --overwrite keeping the old folder) are in
the bad-input table (``tests/bad_inputs.py``); here are the helpers themselves and a real SIGTERM.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from optimum_subnet.core.errors import ResourceError, SubnetError
from optimum_subnet.core.files import atomic_output_dir, check_output_dir, write_json, writing
from tests.conftest import SAMPLE_TEXT, char_tokenizer, tiny_llama

pytestmark = pytest.mark.unit


def test_write_json_failure_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json(path, {"generation": 1})

    def half_then_fail(data, f, **kwargs):
        f.write('{"generation": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", half_then_fail)
    with pytest.raises(OSError):
        write_json(path, {"generation": 2})
    assert json.loads(path.read_text()) == {"generation": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_output_dir_renames_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"\0" * 100)
            raise RuntimeError("crash mid-save")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "config.json").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "config.json").read_text() == "new"


def test_overwrite_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("old")
    staging = tmp_path / "out.partial"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out, overwrite=True, staging=staging) as tmp:
            assert tmp.parent == staging
            assert (out / "config.json").read_text() == "old"
            raise KeyboardInterrupt
    assert (out / "config.json").read_text() == "old" and list(staging.iterdir()) == []
    with atomic_output_dir(out, overwrite=True, staging=staging) as tmp:
        (tmp / "config.json").write_text("new")
    assert (out / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]  # no backup left behind


def test_os_errors_become_one_line_user_errors(tmp_path):
    with pytest.raises(ResourceError, match=r"^no space left on the device while writing x; free some space \(kept\)$"):
        with writing("x", "kept"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(SubnetError, match="cannot write y: permission denied"):
        with writing("y"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(FileNotFoundError):  # anything else is not the user's to fix: traceback kept
        with writing("z"):
            raise FileNotFoundError(errno.ENOENT, "No such file")


def test_output_guards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "model").mkdir()
    with pytest.raises(SubnetError, match="holds the input"):
        check_output_dir(tmp_path / "inputs", overwrite=True, protected=[tmp_path / "inputs" / "model"])
    with pytest.raises(SubnetError, match="holds the current folder"):
        check_output_dir(".", overwrite=True)
    with pytest.raises(SubnetError, match="holds the current folder"):
        check_output_dir(tmp_path / "inputs" / "..", overwrite=True)
    assert check_output_dir(tmp_path / "inputs" / "new", overwrite=False) == tmp_path / "inputs" / "new"


def test_sigterm_mid_search_leaves_no_output_and_a_resumable_checkpoint(tmp_path):
    from optimum_subnet import SubnetConfig

    tiny_llama().save_pretrained(tmp_path / "tiny-llama", safe_serialization=True)
    char_tokenizer().save_pretrained(tmp_path / "tiny-llama")
    (tmp_path / "cal.txt").write_text(SAMPLE_TEXT)
    SubnetConfig.preset("fast", 0.7, search__generations=50, search__population_size=4, search__num_mutations=2,
                        search__num_crossovers=1, search__top_k=2, search__fitness_windows=2,
                        search__fitness_seq_len=32, data__dataset="cal.txt", data__num_samples=8, data__seq_len=32,
                        data__eval_seq_len=32, data__eval_max_windows=4).save_pretrained(tmp_path)
    env = dict(os.environ, OPTIMUM_SUBNET_NO_PROGRESS="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "optimum.commands.optimum_cli", "subnet", "search", "--model", "tiny-llama",
         "--target-ratio", "0.7", "--config", "subnet_optimization.json", "--output", "out", "--device", "cpu"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "out.partial" / "search_state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: terminated; the search checkpoint in out.partial is kept: rerun with --resume"]
    assert not (tmp_path / "out").exists()
    assert json.loads(state.read_text())["generation"] >= 1
    assert not [p for p in (tmp_path / "out.partial").iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_failed_run_takes_back_the_folders_it_created(tmp_path):
    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from optimum_subnet.core.errors import NonFiniteError

    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")
    (tmp_path / "cal.txt").write_text(SAMPLE_TEXT)
    config = SubnetConfig.preset("fast", 0.7, device="cpu", data__dataset=str(tmp_path / "cal.txt"),
                                 data__seq_len=32, data__eval_seq_len=32, search__fitness_seq_len=32)
    with pytest.raises(NonFiniteError):
        SubnetOptimizer(model, char_tokenizer(), "tiny").optimize(config, tmp_path / "new" / "deep" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.txt"]


def test_two_processes_cannot_share_a_work_folder(tmp_path):
    from optimum_subnet.pipeline.checkpoint import RunDirectory

    first = RunDirectory(tmp_path / "out").open()
    with pytest.raises(SubnetError, match="another process is working on"):
        RunDirectory(tmp_path / "out").open()
    first.close(remove=True)
    RunDirectory(tmp_path / "out").open().close(remove=True)  # free again once released
    assert list(tmp_path.iterdir()) == []
