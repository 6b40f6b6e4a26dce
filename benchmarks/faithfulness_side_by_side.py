"""Faithfulness of compression side by side (issue 15): do ours, FLAP and Wanda-sp subnets rely on the same
prompt evidence as the dense model? AtMan relevance maps of every subnet against the dense model's on the
same BoolQ prompts, Spearman rank correlation and top-k overlap, mean ± standard error over the prompts.

    python benchmarks/faithfulness_side_by_side.py --prompts 64 --work /tmp/faith      # hours on 2 CPU cores
    python benchmarks/faithfulness_side_by_side.py --prompts 4 --ratios 0.8 --methods flap --work /tmp/f  # a look

Every subnet comes from the same pass (``SubnetConfig.method``; preset ``--preset``, seed ``--seed``), so
the budget, calibration data and parameter accounting are the same for every method; ours is search +
reformation. The dense model's maps are computed once and kept (``WORK/dense_maps.json``). Each finished
(method, ratio) is saved to ``WORK/<method>_<ratio>.json`` and skipped when the script runs again (a cut run
continues). Writes
``<output>.json`` and ``<output>.md``.

The standard error is the sample standard deviation over prompts / sqrt(prompts); a prompt whose map is
constant (no order) has no Spearman and is left out of that mean (counted in the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/config_overrides.py
from config_overrides import parse_overrides  # noqa: E402

LOG = logging.getLogger("faithfulness_side_by_side")


def mean_se(values: list[float]) -> dict:
    """Mean, standard error and count of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else None
    return {"mean": statistics.fmean(finite), "se": se, "n": len(finite)}


def summarize(score: dict) -> dict:
    rows = score["per_prompt"]
    return {"spearman": mean_se([r["spearman"] for r in rows]),
            "top_k_overlap": mean_se([r["top_k_overlap"] for r in rows]), "k": score["k"], "prompts": len(rows)}


def _reference_key(model: str, prompts, settings) -> dict:
    return {"model": model, "prompts": [[p.prompt, p.target] for p in prompts],
            "atman": settings.atman_config().to_dict()}


def cached_reference(work: Path, model: str, prompts, settings):
    """The dense model's explanations from an earlier run with the same model, prompts and AtMan settings
    (``WORK/dense_maps.json``; 15-20 min of a 2-core CPU for 64 prompts), else None."""
    from optimum_subnet.explain.explainer import Explanation

    path = work / "dense_maps.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("key") != _reference_key(model, prompts, settings):
        return None
    return [Explanation.from_dict(e) for e in data["explanations"]]


def save_reference(work: Path, model: str, prompts, settings, explanations) -> None:
    path = work / "dense_maps.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": _reference_key(model, prompts, settings),
                               "explanations": [e.to_dict() for e in explanations]}))
    tmp.replace(path)


def markdown(result: dict) -> str:
    s = result["settings"]

    def cell(x: dict) -> str:
        if x["mean"] is None:
            return "-"
        return f"{x['mean']:.3f} ± {x['se']:.3f}" if x["se"] is not None else f"{x['mean']:.3f}"

    lines = [f"# Faithfulness of compression side by side: {s['model']}", "",
             f"AtMan relevance maps (token granularity, multiplicative suppression 0.9) of each subnet against the "
             f"dense model's on the same {s['prompts']} BoolQ prompts (passages <= 200 characters, seeded order); "
             f"mean ± standard error over the prompts. Subnets: the pass with preset `{s['preset']}`, seed "
             f"{s['seed']}, on {s['device']}. `python benchmarks/faithfulness_side_by_side.py "
             f"{' '.join(s['argv'])}`.", "",
             f"| ratio | method | Spearman | top-{s['top_k']} overlap | prompts with a Spearman | held-out ppl (the pass's "
             "windows) |",
             "|---:|---|---:|---:|---:|---:|"]
    for e in sorted(result["entries"], key=lambda e: (-e["target_ratio"], e["method"])):
        f = e["faithfulness"]
        lines.append(f"| {e['target_ratio']:.1f} | {e['method']} | {cell(f['spearman'])} | {cell(f['top_k_overlap'])} "
                     f"| {f['spearman']['n']} of {f['prompts']} | "
                     + ", ".join(f"{k}: {v:.2f}" for k, v in e["final_ppl"].items()) + " |")
    units = [r["units"] for e in result["entries"] for r in e["per_prompt"] if r.get("units")]
    if units:
        lines += ["", f"Chance level of the top-{s['top_k']} overlap (two independent random orders of a prompt's "
                  f"units, mean over prompts): {statistics.fmean(s['top_k'] / u for u in units):.3f}; of the "
                  "Spearman correlation: 0."]
    pairs = paired_differences(result["entries"])
    if pairs:
        lines += ["", "Paired differences (ours - baseline on the same prompts; mean ± standard error of the "
                  "per-prompt differences):", "", f"| ratio | baseline | Spearman | top-{s['top_k']} overlap |",
                  "|---:|---|---:|---:|"]
        lines += [f"| {r:.1f} | {m} | {cell(d['spearman'])} | {cell(d['top_k_overlap'])} |" for (r, m), d in pairs.items()]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"* {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def paired_differences(entries: list[dict]) -> dict:
    """(ratio, baseline) -> mean ± SE of ours minus the baseline, prompt by prompt (the same prompts: the
    pairing removes the prompts' shared difficulty, so the difference is measured more tightly than the two
    means' errors suggest). Prompts where either value is missing are left out."""
    ours = {e["target_ratio"]: e for e in entries if e["method"] == "ours"}
    pairs = {}
    for e in sorted(entries, key=lambda e: (-e["target_ratio"], e["method"])):
        mine = ours.get(e["target_ratio"])
        if e["method"] == "ours" or mine is None or len(mine["per_prompt"]) != len(e["per_prompt"]):
            continue
        pairs[(e["target_ratio"], e["method"])] = {
            key: mean_se([a[key] - b[key] if a[key] is not None and b[key] is not None else None
                          for a, b in zip(mine["per_prompt"], e["per_prompt"])])
            for key in ("spearman", "top_k_overlap")}
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=["ours", "flap", "wanda-sp"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.5])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--preset", default="fast", choices=["auto", "fast", "paper"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", required=True, help="folder for finished entries (a cut run continues)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "faithfulness_smollm2"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. "
                        "data__eval_max_windows=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from optimum_subnet.core.config import FaithfulnessConfig
    from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer, boolq_prompts
    from optimum_subnet.loading import resolve_device

    overrides = parse_overrides(args.set)
    device = resolve_device(args.device)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    optimizer = SubnetOptimizer.from_pretrained(args.model)
    dense, tokenizer = optimizer.model.to(device).eval(), optimizer.tokenizer
    settings = FaithfulnessConfig(prompts=args.prompts, top_k=args.top_k)
    limit = min(settings.max_tokens, getattr(dense.config, "max_position_embeddings", settings.max_tokens))
    prompts = boolq_prompts(args.prompts, settings.max_passage_chars, settings.seed, tokenizer, limit)
    start = time.perf_counter()
    scorer = FaithfulnessScorer(dense, tokenizer, prompts, settings.atman_config(), args.top_k,
                                reference=cached_reference(work, args.model, prompts, settings))
    LOG.info("dense relevance maps of %d prompts in %.0f s", len(prompts), time.perf_counter() - start)
    save_reference(work, args.model, prompts, settings, scorer.reference)
    entries = []
    for ratio in args.ratios:
        for method in args.methods:
            path = work / f"{method}_{ratio}.json"
            if path.exists():
                entries.append(json.loads(path.read_text()))
                continue
            LOG.info("=== %s at %.2f", method, ratio)
            config = SubnetConfig.preset(args.preset, ratio, method=method, seed=args.seed, device=str(device),
                                         faithfulness__prompts=0, **overrides)
            start = time.perf_counter()
            result = optimizer.run(config)
            pass_seconds = time.perf_counter() - start
            start = time.perf_counter()
            score = scorer.score(result["model"].to(device).eval())
            report = result["report"]
            entry = {"method": method, "target_ratio": ratio, "params": report["subnet"]["params"],
                     "final_ppl": report["subnet"]["ppl"], "pass_seconds": pass_seconds,
                     "atman_seconds": time.perf_counter() - start, "faithfulness": summarize(score),
                     "per_prompt": [{k: r[k] for k in ("spearman", "top_k_overlap", "units")}
                                    for r in score["per_prompt"]]}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entry))
            tmp.replace(path)
            entries.append(entry)
            del result
    result = {"settings": {"model": args.model, "prompts": len(prompts), "top_k": args.top_k, "preset": args.preset,
                           "seed": args.seed, "device": str(device), "overrides": overrides,
                           "argv": list(argv) if argv is not None else sys.argv[1:]},
              "entries": entries}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=1))
    output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
