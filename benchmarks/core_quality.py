"""Core results table: dense / initial / searched / final perplexity and parameters at several ratios.

    python benchmarks/core_quality.py                      # SmolLM2-135M, ratios 0.9..0.5, preset auto
    python benchmarks/core_quality.py --preset fast --ratios 0.8

Writes ``<output>.json`` (every run's full report), ``<output>.md`` (the table) and ``<output>.png``
(perplexity vs inheriting ratio). Perplexities are on the held-out side of the built-in Wikipedia
extract (``enwiki-extract``), not WikiText-2: see the README.
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



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--preset", default="auto", choices=["auto", "fast", "paper"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. search__generations=16 data__eval_max_windows=64")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "core_smollm2"))
    parser.add_argument("--redraw", action="store_true", help="only rewrite <output>.md/.png from <output>.json")
    args = parser.parse_args(argv)
    if args.redraw:
        runs = json.loads(Path(args.output).with_suffix(".json").read_text())
        write_outputs(runs, Path(args.output))
        sys.stdout.write(Path(args.output).with_suffix(".md").read_text())
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from optimum_subnet import SubnetConfig, SubnetOptimizer

    overrides = parse_overrides(args.set)
    optimizer = SubnetOptimizer.from_pretrained(args.model)
    runs = []
    for ratio in args.ratios:
        config = SubnetConfig.preset(args.preset, ratio, seed=args.seed, device=args.device, **overrides)
        start = time.perf_counter()
        report = optimizer.run(config)["report"]
        report["wall_seconds"] = time.perf_counter() - start
        for layer_list in ("layers",):
            report["reformation"].pop(layer_list, None)
        runs.append(report)
        write_outputs(runs, Path(args.output))  # after every ratio: a cut run keeps what it measured
    sys.stdout.write(Path(args.output).with_suffix(".md").read_text())
    return 0


def write_outputs(runs: list[dict], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(runs))
    plot(runs, output.with_suffix(".png"))


def _ppl(entry):
    return next(iter(entry["ppl"].values()))


def markdown(runs: list[dict]) -> str:
    first = runs[0]
    ev = first["evaluation"]
    env = first["environment"]
    lines = [
        f"# {first['model']}: search + reformation at several inheriting ratios",
        "",
        f"Held-out perplexity on {ev['description']}: {ev['windows']} windows of {ev['seq_len']} tokens. "
        f"Preset `{first['config']['preset']}`, seed {first['config']['seed']}, device {env['device']} "
        f"(threads per run in the table), torch {env['versions']['torch']}, transformers "
        f"{env['versions']['transformers']}.",
        "",
        f"Dense: {first['dense']['params']:,} parameters, perplexity {_ppl(first['dense']):.2f}.",
        "",
        "| target | final ratio | block ratio | params | initial ppl (uniform) | initial ppl (global) | seed | "
        "searched ppl | final ppl | search evals | s/eval | search s | reform s | total s | threads |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        sub, search = r["subnet"], r["search"]
        glob = f"{_ppl(r['initial_global']):.2f}" if "initial_global" in r else "-"
        seed = r.get("initialization", {}).get("chosen", "uniform")
        lines.append(
            f"| {r['target_ratio']:.2f} | {sub['inheriting_ratio']:.4f} | {sub['block_ratio']:.4f} | "
            f"{sub['params']:,} | {_ppl(r['initial']):.2f} | {glob} | {seed} | {_ppl(r['searched']):.2f} | "
            f"{_ppl(sub):.2f} | {search['evaluations']} | {search['seconds_per_evaluation']:.2f} | "
            f"{search['seconds']:.0f} | {r['reformation']['seconds']:.0f} | {r['timings']['total']:.0f} | "
            f"{r['environment']['torch_threads']} |"
        )
    lines += ["", "Initial: importance-only subnets before the search, the paper's uniform one and the global "
                  "(adaptive) one; seed: the one the search started from (lower calibration perplexity). "
                  "Searched: after the evolutionary search, before reformation. Final: after reformation "
                  f"({runs[0]['reformation']['method']}). Times are wall-clock seconds on the machine above "
                  "(total includes the 64-window evaluations of dense, both initial, searched and final subnets "
                  "and the faithfulness check). Only the 0.8 run had the machine to itself; the others shared its 2 cores "
                  "with another benchmark, so their times are upper bounds.", ""]
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: r["target_ratio"])
    x = [r["subnet"]["inheriting_ratio"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, label, style in (("initial", "initial (uniform, paper)", "s--"),
                              ("initial_global", "initial (global)", "v--"), ("searched", "searched", "o-"),
                              ("subnet", "searched + reformed", "D-")):
        points = [(xi, _ppl(r[key])) for xi, r in zip(x, runs) if key in r]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ax.axhline(_ppl(runs[0]["dense"]), color="black", linewidth=0.8, label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("inheriting ratio (all parameters)")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title(runs[0]["model"])
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
