"""Low ratios on SmolLM2-135M: which levers lower the final perplexity at 0.5?

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/low_ratio.py --ratio 0.5 --work /tmp/low-ratio  # resumable

Fast preset, seed 0, held-out perplexity on the core table's windows (64 x 512 tokens of the evaluation
articles). The data, the dense perplexity and the importance scores are computed once; then, per search
variant (``--variants``), the pass's own selector (initial subnets, search, optional final selection)
picks a subnet, which is reformed with the preset's calibration (32 x 256 tokens) and with each longer
calibration of ``--reform`` (windows x tokens, drawn like the preset's: random offsets on the
calibration articles, seed 0). Variants:

* ``default``: the pass's settings;
* ``heads``: whole KV heads in the search space besides in-head channels (``search.kv_head_search``),
  the global initial subnet by heads as a third starting candidate;
* ``depth``: depth search allowed down to 75% of the layers (``search.min_depth_ratio=0.75``; the
  default 0.875 is the paper's 28 of 32);
* ``heads_depth``: both.

``--set KEY=VALUE`` applies config overrides to every variant (e.g. the fitness settings of the
generalization ablation's winner). Writes ``<output>.json`` / ``<output>.md`` after every variant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/config_overrides.py
from config_overrides import parse_overrides  # noqa: E402

logger = logging.getLogger("benchmarks.low_ratio")

VARIANTS = {
    "default": {},
    "heads": {"search__kv_head_search": "on"},
    "depth": {"search__min_depth_ratio": 0.75},
    "heads_depth": {"search__kv_head_search": "on", "search__min_depth_ratio": 0.75},
}


def ppl_of(entry) -> float:
    return next(iter(entry.values()))


def _cached_run_class():
    from optimum_subnet.pipeline import stages

    class CachedRun(stages.RunContext):
        """The initial subnets are the same in every variant (same scores and widths): their held-out
        perplexity is measured once (the CPU is shared and slow) and read back by label."""

        cache_path: Path | None = None

        def evaluate(self, model, label: str) -> dict[str, float]:
            if not label.startswith("initial") or self.cache_path is None:
                return super().evaluate(model, label)
            cache = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
            if label not in cache:
                cache[label] = super().evaluate(model, label)
                self.cache_path.write_text(json.dumps(cache))
            return cache[label]

    return CachedRun


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--variants", default="default,heads,depth,heads_depth")
    parser.add_argument("--reform", nargs="*", default=["128x256"],
                        help="longer reformation calibrations, WINDOWSxTOKENS")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--work", default="/tmp/low-ratio")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "low_ratio_smollm2"))
    parser.add_argument("--redraw", action="store_true")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.redraw:
        data = json.loads(output.with_suffix(".json").read_text())
        output.with_suffix(".md").write_text(markdown(data))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    from optimum_subnet import SubnetConfig
    from optimum_subnet import data as data_lib
    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.families import get_adapter
    from optimum_subnet.loading import load_model
    from optimum_subnet.pipeline import stages
    from optimum_subnet.stages.importance import ImportanceScores
    from optimum_subnet.stages.surgery import extract_subnet

    torch.set_num_threads(1)
    CachedRun = _cached_run_class()
    work = Path(args.work) / f"r{args.ratio}"
    work.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.set)
    model, tokenizer = load_model(args.model)
    model.eval()
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    base = SubnetConfig.preset("fast", args.ratio, seed=args.seed, device="cpu",
                               data__eval_max_windows=args.eval_windows, faithfulness__prompts=0, **overrides)
    positions = model.config.max_position_embeddings
    shared_path, scores_path = work / "shared.json", work / "importance.pt"
    data = stages.load_pass_data(base, tokenizer, positions)
    shared = json.loads(shared_path.read_text()) if shared_path.exists() else {}
    if "dense" not in shared:
        shared["dense"] = stages.evaluate(model, data, base.data.eval_batch_size, "dense")
        shared_path.write_text(json.dumps(shared))
    if scores_path.exists():
        scores = ImportanceScores.from_tensors(torch.load(scores_path))
    else:
        scores = stages.importance(model, adapter, base, data, "cpu")
        torch.save(scores.to_tensors(), scores_path)
    stream = data_lib.tokenize_stream(data_lib.load_texts(base.data.dataset, "calibration"), tokenizer)
    results = {"ratio": args.ratio, "seed": args.seed, "dense": ppl_of(shared["dense"]), "overrides": overrides,
               "eval_windows": len(data.evaluation), "variants": []}
    for name in args.variants.split(","):
        path = work / f"{name}.json"
        if path.exists():
            row = json.loads(path.read_text())
        else:
            config = base.replace(**VARIANTS[name])
            run_data = stages.load_pass_data(config, tokenizer, positions)
            run = CachedRun(model=model, tokenizer=tokenizer, adapter=adapter, shape=shape, config=config,
                            device="cpu", data=run_data, report={}, timings={}, scores=scores)
            run.cache_path = work / "initial_ppl.json"
            start = time.perf_counter()
            selection = stages.SearchSelector().select(run)
            search_seconds = time.perf_counter() - start
            spec = selection.spec
            row = {"variant": name, "overrides": VARIANTS[name], "search_seconds": search_seconds,
                   "initial": {k[len("initial"):].strip("_") or "uniform": {"ppl": ppl_of(v["ppl"]),
                                                                             "fitness": v["fitness"]}
                               for k, v in run.report.items() if k.startswith("initial") and k != "initialization"},
                   "seed": run.report["initialization"]["chosen"], "search": selection.report["search"],
                   "subnet": spec.summary(), "spec": spec.to_dict(), "reformed": {}}
            subnet = extract_subnet(model, spec, adapter)
            row["searched"] = ppl_of(run.evaluate(subnet, "searched"))
            for label, windows in [(f"{config.data.num_samples}x{config.data.seq_len}", run_data.calibration)] + [
                    (r, data_lib.calibration_windows(stream, int(r.split("x")[0]), int(r.split("x")[1]), args.seed))
                    for r in args.reform]:
                subnet = extract_subnet(model, spec, adapter)
                t = time.perf_counter()
                stages.reform(model, subnet, spec, adapter, config, stages.PassData(
                    windows, run_data.fitness, run_data.evaluation, run_data.eval_name, run_data.eval_key), "cpu")
                row["reformed"][label] = {"ppl": ppl_of(run.evaluate(subnet, f"reformed {label}")),
                                          "seconds": time.perf_counter() - t}
                logger.info("%s: reformed on %s: %.2f", name, label, row["reformed"][label]["ppl"])
            path.write_text(json.dumps(row))
        results["variants"] = [v for v in results["variants"] if v["variant"] != name] + [row]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        output.with_suffix(".md").write_text(markdown(results))
    return 0


def markdown(results: dict) -> str:
    reforms = []
    for v in results["variants"]:
        for label in v["reformed"]:
            if label not in reforms:
                reforms.append(label)
    lines = [f"# SmolLM2-135M at ratio {results['ratio']}: search-space and reformation levers",
             "",
             f"Fast preset, seed {results['seed']}, CPU (one thread, shared machine); held-out perplexity on "
             f"{results['eval_windows']} windows x 512 tokens of the evaluation articles (the core table's). Dense "
             f"{results['dense']:.2f}. Config overrides for every variant: `{results['overrides'] or 'none'}`. "
             "Reformation calibration: WINDOWS x TOKENS of the calibration articles (random offsets, seed 0).",
             "",
             "| variant | initial subnets (held-out ppl) | seed | searched | " +
             " | ".join(f"final, reformed on {r}" for r in reforms) + " | layers | KV heads kept | search s |",
             "|---|---|---|---:|" + "---:|" * len(reforms) + "---:|---:|---:|"]
    for v in results["variants"]:
        initial = ", ".join(f"{k} {e['ppl']:.1f}" for k, e in v["initial"].items())
        finals = " | ".join(f"{v['reformed'][r]['ppl']:.2f}" if r in v["reformed"] else "-" for r in reforms)
        heads = sum(v["subnet"]["kv_heads"])
        lines.append(f"| {v['variant']} | {initial} | {v['seed']} | {v['searched']:.2f} | {finals} | "
                     f"{v['subnet']['num_layers']} | {heads} | {v['search_seconds']:.0f} |")
    lines += ["", "Variants: " + "; ".join(f"`{k}`: {VARIANTS[k] or 'the pass as configured'}" for k in
                                           [v["variant"] for v in results["variants"]]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
