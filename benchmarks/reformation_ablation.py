"""Reformation ablation on one searched subnet: none vs ADMM (paper) vs closed form (fixed / chosen damping).

    python benchmarks/reformation_ablation.py --spec DIR_OR_SUBNET_CONFIG_JSON [--samples 32 --seq-len 256]

Each variant starts from the same searched (un-reformed) subnet and the same calibration windows, and is
scored by held-out perplexity. Writes benchmarks/results/reformation_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--spec", help="subnet folder or subnet_config.json of a searched subnet")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "reformation_ablation"))
    parser.add_argument("--redraw", action="store_true", help="only rewrite <output>.md from <output>.json")
    args = parser.parse_args(argv)
    if args.redraw:
        data = json.loads(Path(args.output).with_suffix(".json").read_text())
        write_markdown(data["meta"], data["rows"], Path(args.output))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from optimum_subnet import data as D
    from optimum_subnet.families import get_adapter
    from optimum_subnet.evaluation.perplexity import perplexity
    from optimum_subnet.loading import load_model
    from optimum_subnet.stages.reformation import reform
    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.stages.surgery import extract_subnet

    if not args.spec:
        parser.error("--spec is required (unless --redraw)")
    model, tokenizer = load_model(args.model)
    adapter = get_adapter(model.config)
    spec = SubnetSpec.load(args.spec)
    calibration = D.calibration_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "calibration"), tokenizer),
                                        args.samples, args.seq_len, seed=0)
    held_out = D.evaluation_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "evaluation"), tokenizer), 512,
                                    args.eval_windows)
    variants = [
        ("none (inherited weights)", "none", {}),
        ("ADMM, rho=1 (paper), 30 iterations", "admm", {"rho": 1.0}),
        ("ADMM, rho=0.1, 30 iterations", "admm", {"rho": 0.1}),
        ("closed form, damp 0.01 fixed", "closed_form", {"damp": 0.01}),
        ("closed form, damp 0.001 fixed", "closed_form", {"damp": 0.001}),
        ("closed form, damp chosen on held-out calibration windows (default)", "closed_form", {"damp": None}),
    ]
    rows = []
    for name, method, kwargs in variants:
        subnet = extract_subnet(model, spec, adapter)
        start = time.perf_counter()
        result = reform(model, subnet, spec, adapter, calibration, 8, "cpu", method=method, **kwargs)
        seconds = time.perf_counter() - start
        rows.append({"variant": name, "method": method, **{k: v for k, v in kwargs.items()},
                     "ppl": perplexity(subnet, held_out, 4), "seconds": seconds,
                     "attention_error": result.mean_error("attention_error_after"),
                     "mlp_error": result.mean_error("mlp_error_after")})
        logging.info("%s: ppl %.2f", name, rows[-1]["ppl"])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "spec": str(args.spec), "inheriting_ratio": spec.inheriting_ratio(),
            "calibration": f"{args.samples} x {args.seq_len} tokens", "held_out": f"{len(held_out)} x 512 tokens"}
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    write_markdown(meta, rows, output)
    return 0


def write_markdown(meta: dict, rows: list[dict], output: Path) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [f"# Reformation ablation ({meta['model']}, subnet at {meta['inheriting_ratio']:.3f})", "",
             f"Calibration {meta['calibration']}; held-out perplexity on {meta['held_out']} of enwiki-extract. "
             f"Subnet: {meta['spec']}.", "",
             "| variant | held-out ppl | W_O rel. error | W_down rel. error | seconds |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['ppl']:.2f} | {fmt(r['attention_error'], '.3f')} | "
                     f"{fmt(r['mlp_error'], '.3f')} | {r['seconds']:.0f} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
