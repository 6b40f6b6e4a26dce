"""benchmarks/faithfulness_side_by_side.py runs on a tiny model (CPU): per method and ratio a subnet from the
pass, its AtMan maps against the dense model's, mean ± standard error; a second run reuses finished entries."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.unit


def test_mean_and_standard_error_leave_out_prompts_without_a_value():
    script = load_benchmark("faithfulness_side_by_side")
    assert script.mean_se([1.0, 0.5, float("nan"), None]) == {"mean": 0.75, "se": pytest.approx(0.25), "n": 2}
    assert script.mean_se([0.3]) == {"mean": 0.3, "se": None, "n": 1}
    assert script.mean_se([float("nan")]) == {"mean": None, "se": None, "n": 0}


def test_side_by_side_on_a_tiny_model(tmp_path, tiny_model_dir, text_files, monkeypatch, capsys):
    from optimum_subnet.evaluation import faithfulness
    from optimum_subnet.pipeline.optimizer import SubnetOptimizer

    prompts = [faithfulness.Prompt("the fox jumps over the dog. Question: does it jump?\nAnswer:", " yes"),
               faithfulness.Prompt("a box of jugs. Question: is it a box?\nAnswer:", " no"),
               faithfulness.Prompt("quick daft zebras. Question: are they slow?\nAnswer:", " no")]
    monkeypatch.setattr(faithfulness, "boolq_prompts", lambda n, *a, **k: prompts[:n])
    cal, ev = text_files
    work, output = tmp_path / "work", tmp_path / "out" / "faith"
    argv = ["--model", str(tiny_model_dir), "--methods", "flap", "magnitude", "--ratios", "0.8", "--prompts", "3",
            "--top-k", "3", "--device", "cpu", "--work", str(work), "--output", str(output),
            "--set", f"data__dataset={cal}", f"data__eval_dataset={ev}", "data__seq_len=32", "data__num_samples=4",
            "data__eval_seq_len=32", "data__eval_max_windows=2"]
    assert load_benchmark("faithfulness_side_by_side").main(argv) == 0
    result = json.loads(output.with_suffix(".json").read_text())
    assert {(e["method"], e["target_ratio"]) for e in result["entries"]} == {("flap", 0.8), ("magnitude", 0.8)}
    for entry in result["entries"]:
        f = entry["faithfulness"]
        assert f["prompts"] == 3 and len(entry["per_prompt"]) == 3 and 1 <= f["spearman"]["n"] <= 3
        values = [r["spearman"] for r in entry["per_prompt"] if r["spearman"] is not None and not math.isnan(r["spearman"])]
        assert f["spearman"]["mean"] == pytest.approx(sum(values) / len(values))
        assert 0.0 <= f["top_k_overlap"]["mean"] <= 1.0
        assert all(math.isfinite(v) for v in entry["final_ppl"].values())
    table = output.with_suffix(".md").read_text()
    assert "| 0.8 | flap |" in table and "| 0.8 | magnitude |" in table and "±" in table

    def no_pass(*_args, **_kwargs):
        raise AssertionError("a finished entry or the dense maps were computed again")

    monkeypatch.setattr(SubnetOptimizer, "run", no_pass)
    monkeypatch.setattr(faithfulness, "explain_prompts", no_pass)  # the dense maps come from WORK/dense_maps.json
    assert (work / "dense_maps.json").exists()
    assert load_benchmark("faithfulness_side_by_side").main(argv) == 0
    assert json.loads(output.with_suffix(".json").read_text())["entries"] == result["entries"]


def _entry(method, ratio, spearman, overlap):
    rows = [{"spearman": s, "top_k_overlap": o, "units": 20} for s, o in zip(spearman, overlap)]
    return {"method": method, "target_ratio": ratio, "final_ppl": {"wiki": 30.0}, "per_prompt": rows,
            "faithfulness": {"spearman": {"mean": 0.0, "se": 0.0, "n": len(rows)},
                             "top_k_overlap": {"mean": 0.0, "se": 0.0, "n": len(rows)}, "prompts": len(rows)}}


def test_paired_differences_are_taken_prompt_by_prompt():
    script = load_benchmark("faithfulness_side_by_side")
    entries = [_entry("ours", 0.8, [0.5, 0.3, None], [0.4, 0.2, 0.2]),
               _entry("flap", 0.8, [0.1, 0.2, 0.9], [0.2, 0.2, 0.0]),
               _entry("flap", 0.5, [0.1, 0.2, 0.9], [0.2, 0.2, 0.0])]  # no ours at 0.5: no pair
    pairs = script.paired_differences(entries)
    assert list(pairs) == [(0.8, "flap")]
    # Spearman: the third prompt has no value for ours and is left out; differences 0.4 and 0.1
    assert pairs[(0.8, "flap")]["spearman"] == {"mean": pytest.approx(0.25), "se": pytest.approx(0.15), "n": 2}
    assert pairs[(0.8, "flap")]["top_k_overlap"]["mean"] == pytest.approx((0.2 + 0.0 + 0.2) / 3)
    settings = {"model": "m", "prompts": 3, "top_k": 5, "preset": "fast", "seed": 0, "device": "cpu", "argv": []}
    text = script.markdown({"settings": settings, "entries": entries, "notes": ["a note"]})
    assert "| 0.8 | flap | 0.250 ± 0.150 |" in text
    assert "Chance level of the top-5 overlap" in text and ": 0.250;" in text  # 5 of 20 units
    assert "* a note" in text
