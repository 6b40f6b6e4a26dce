"""Does more calibration text help the reformation at a low ratio? Reform the same searched subnets (from a
``generalization_ablation.py`` work folder: today's engine's best, the reference engine's best, and today's best
with one layer's MLP widened as ``layer_width_probe.py`` does; the ones the folder has) with N calibration
windows of 256 tokens, for several N, and score each on the same held-out windows. Issue 15 lists "longer reformation calibration" among the ways to
halve the 0.5 perplexity; this measures it.

    OMP_NUM_THREADS=2 python benchmarks/calibration_size_probe.py --work WORK/r0.5 --seed 0 --samples 32 128 256

The N windows are the pass's own calibration draw with ``data.num_samples = N`` (seeded starts in the calibration
split; the damping is chosen on held-out calibration windows as the pass does); the held-out windows are the
evaluation split's, disjoint from all of them. Writes ``<output>.json`` / ``.md``; finished rows are kept and
skipped when the script runs again.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def markdown(result: dict) -> str:
    s = result["settings"]
    samples = sorted({r["samples"] for r in result["rows"]})
    lines = ["# Reformation calibration size at a low ratio", "",
             f"SmolLM2-135M at ratio {s['ratio']}, seed {s['seed']}: each subnet reformed (closed form, the pass's "
             f"defaults) with N calibration windows of {s['seq_len']} tokens, held-out perplexity on "
             f"{s['eval_windows']} windows of 512 tokens of the evaluation split (the same for every row); Δ: mean "
             "per-window log-perplexity difference to N = the pass's default, ± its standard error. `python "
             f"benchmarks/calibration_size_probe.py {' '.join(s['argv'])}`.", "",
             "| subnet | " + " | ".join(f"N = {n}" for n in samples) + " |", "|---|" + "---:|" * len(samples)]
    for name in dict.fromkeys(r["subnet"] for r in result["rows"]):
        cells = []
        for n in samples:
            row = next((r for r in result["rows"] if r["subnet"] == name and r["samples"] == n), None)
            if row is None:
                cells.append("-")
                continue
            delta = row.get("delta")
            cells.append(f"{row['ppl']:.2f}" + (f" (Δ {delta['mean']:+.3f} ± {delta['se']:.3f})" if delta else "")
                         + f", {row['seconds']:.0f} s")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"* {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="a ratio folder of generalization_ablation.py's --work")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--samples", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--widen-layer", type=int, default=0, help="the layer whose MLP the third subnet widens")
    parser.add_argument("--widen-to", type=int, default=1280, help="0: no widened subnet")
    parser.add_argument("--initial", nargs="*", default=[], choices=["uniform", "global"],
                        help="also the initial subnets (before search) the folder's prefix was computed for")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "calibration_size_probe_05_s0"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import reference_engine.state as reference_state
    from generalization_ablation import Context, paired, ppl, window_nll

    from optimum_subnet.algorithms.masks import resize_masks
    from optimum_subnet.pipeline import stages
    from optimum_subnet.search.space import LayerGene
    from optimum_subnet.search.state import genome_from_json
    from optimum_subnet.stages.surgery import extract_subnet

    work, output = Path(args.work), Path(args.output)
    ctx = Context(argparse.Namespace(model=args.model, seed=args.seed, eval_windows=args.eval_windows, device="cpu"),
                  args.ratio, work)
    space = ctx.space

    def best_of(variant: str):
        return json.loads((work / f"{variant}.stages.json").read_text())["search"]["top"][0]

    subnets = {f"{name} initial": ctx.initial[name] for name in args.initial}
    if not (work / "baseline.stages.json").exists():
        if not subnets:
            raise SystemExit(f"{work} has no searched subnet (baseline.stages.json) and --initial names none")
        args.widen_to = 0
    else:
        subnets["today's engine's best"] = current = genome_from_json(best_of("baseline"))
    if (work / "reference_engine.stages.json").exists():
        subnets["reference engine's best"] = space.from_spec(ctx.variant_space(ctx.config, "reference").to_spec(
            reference_state.genome_from_json(best_of("reference_engine"))))
    if args.widen_to:
        genes = list(current)
        gene = genes[args.widen_layer]
        genes[args.widen_layer] = LayerGene(gene.attention, resize_masks(
            gene.mlp[None, :], args.widen_to, space.mlp_ranks[args.widen_layer])[0], gene.heads)
        widened = space.repair(tuple(genes), random.Random(0), frozen=[args.widen_layer])
        if widened is None:
            raise SystemExit(f"no subnet in the budget with layer {args.widen_layer}'s MLP at {args.widen_to}")
        subnets[f"today's best, layer {args.widen_layer} MLP widened to {args.widen_to}"] = widened

    settings = {"ratio": args.ratio, "seed": args.seed, "seq_len": ctx.config.data.seq_len,
                "eval_windows": len(ctx.data.evaluation), "default_samples": ctx.config.data.num_samples,
                "argv": list(argv) if argv is not None else sys.argv[1:]}
    rows = []
    if output.with_suffix(".json").exists():
        previous = json.loads(output.with_suffix(".json").read_text())
        if {k: v for k, v in previous["settings"].items() if k != "argv"} == \
                {k: v for k, v in settings.items() if k != "argv"}:
            rows = previous["rows"]

    def save() -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        result = {"settings": settings, "rows": rows}
        output.with_suffix(".json").write_text(json.dumps(result, indent=1))
        output.with_suffix(".md").write_text(markdown(result))

    for n in args.samples:
        config = ctx.config.replace(data__num_samples=n)
        data = stages.load_pass_data(config, ctx.tokenizer, ctx.model.config.max_position_embeddings, search=False)
        for name, genome in subnets.items():
            if any(r["subnet"] == name and r["samples"] == n for r in rows):
                continue
            spec = space.to_spec(genome)
            start = time.perf_counter()
            subnet = extract_subnet(ctx.model, spec, ctx.adapter)
            stages.reform(ctx.model, subnet, spec, ctx.adapter, config, data, "cpu")
            nll = window_nll(subnet, ctx.data.evaluation)
            rows.append({"subnet": name, "samples": n, "ppl": ppl(nll), "nll": nll, "params": spec.params(),
                         "mlp_widths": [g.mlp_width if g is not None else 0 for g in genome],
                         "seconds": time.perf_counter() - start})
            logging.info("%s, N = %d: held-out %.2f", name, n, rows[-1]["ppl"])
            save()
    for row in rows:  # Δ against the default N of the same subnet, where it was measured
        base = next((r for r in rows if r["subnet"] == row["subnet"] and r["samples"] == settings["default_samples"]),
                    None)
        row["delta"] = paired(row["nll"], base["nll"]) if base is not None and base is not row else None
    save()
    sys.stdout.write(markdown({"settings": settings, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
