"""Many seeds of ``generalization_ablation.py`` side by side: per variant, how often the final (reformed)
searched subnet beats the reformed initial subnet, and the spread of final perplexities.

    python benchmarks/ablation_seeds.py benchmarks/results/generalization_ablation_05_s{0,1,2}.json \\
        benchmarks/results/generalization_ablation_05_gpu_s{3,4,5,6,7,8,9,10}.json --output OUT.md

Each JSON is one seed's ``--output`` of generalization_ablation.py (the seed and the device are in its meta).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization_ablation import summarize  # noqa: E402


def rows_of(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        meta = data["meta"]
        for row in summarize(data["runs"]):
            best = next(v for v in data["runs"][str(row["ratio"])]["variants"] if v["variant"] == row["variant"])
            rows.append({**row, "seed_number": meta["seed"], "device": meta.get("device", "cpu"),
                         "best_fitness": best["best_fitness"]})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| seed | device | variant | best fitness | searched | reformed initial | final | Δ final ± se | "
             "selected after reformation |", "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["seed_number"], r["variant"])):
        d = r["final_vs_reformed_initial"]
        after = r["after_reformation_selected"]
        lines.append(f"| {r['seed_number']} | {r['device']} | {r['variant']} | {r['best_fitness']:.1f} | "
                     f"{r['searched_ppl']:.2f} | {r['reformed_initial_ppl']:.2f} | **{r['final_ppl']:.2f}** | "
                     f"{d['mean']:+.3f} ± {d['se']:.3f} | "
                     + ("-" if after is None else f"{after}: {r['after_reformation_ppl']:.2f}") + " |")
    lines += ["", "| variant | seeds | final < reformed initial | final: median (min-max) | "
              "selected after reformation: median (min-max) | geometric mean final / reformed initial |",
              "|---|---:|---:|---|---|---:|"]
    for variant in sorted({r["variant"] for r in rows}):
        rs = [r for r in rows if r["variant"] == variant]
        finals = [r["final_ppl"] for r in rs]
        after = [r["after_reformation_ppl"] for r in rs if r["after_reformation_ppl"] is not None]
        wins = sum(r["final_ppl"] < r["reformed_initial_ppl"] for r in rs)
        ratio = statistics.geometric_mean([r["final_ppl"] / r["reformed_initial_ppl"] for r in rs])
        lines.append(f"| {variant} | {len(rs)} | {wins} of {len(rs)} | {statistics.median(finals):.1f} "
                     f"({min(finals):.1f}-{max(finals):.1f}) | "
                     + (f"{statistics.median(after):.1f} ({min(after):.1f}-{max(after):.1f})" if after else "-")
                     + f" | {ratio:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    text = markdown(rows_of(args.results))
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
