"""How long the direct builder takes to write a LLaMA-7B-shaped graph (fp16 weights to model.onnx.data).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/build_time.py --shape llama7b --work /tmp/bt \\
        --output benchmarks/results/build_time_llama7b_cpu

Random weights (one pool of normal values sliced per tensor, so drawing 6.7 billion random numbers is not
what is timed); the builder packs, transposes, converts and writes every tensor and the graph. The
machine's load and disk make the figure indicative only. Writes ``<output>.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama7b")
    parser.add_argument("--variants", default="dense,0.5")
    parser.add_argument("--work", default="/tmp/build_time")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    import os

    import torch

    from ort_decode import variant_config
    from optimum_subnet.core.environment import environment
    from optimum_subnet.onnx.builder import BuildConfig, RandomWeights, build_decoder

    rows = []
    for variant in args.variants.split(","):
        config, _ = variant_config(args.shape, variant)
        t0 = time.perf_counter()
        source = RandomWeights(config, dtype=torch.float16, device="cpu", tied=False, pool=True)
        t1 = time.perf_counter()
        cpu0 = os.times()
        folder = Path(args.work) / variant
        shutil.rmtree(folder, ignore_errors=True)
        summary = build_decoder(source, config, folder, BuildConfig(dtype="fp16", max_positions=4096,
                                                                    external_data=True))
        t2 = time.perf_counter()
        cpu1 = os.times()
        size = sum(f.stat().st_size for f in folder.iterdir())
        rows.append({"shape": args.shape, "variant": variant, "pool_s": t1 - t0, "build_s": t2 - t1,
                     "builder_reported_s": summary["seconds"], "files_bytes": size,
                     "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
                     "load_average": os.getloadavg(),
                     "weight_bytes": summary["weight_bytes"], "nodes": summary["nodes"],
                     "rotary": summary["rotary"], "layers": summary["layers"]})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    result = {"rows": rows, "environment": environment(torch.device("cpu")), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(),
              "note": "indicative: a shared 2-core machine; disk and load vary"}
    Path(args.output + ".json").write_text(json.dumps(result, indent=1))
    lines = ["# Direct builder: build time at the LLaMA-7B shape (CPU, indicative)", "",
             f"{os.cpu_count()} CPU cores shared with other work, {torch.get_num_threads()} torch thread(s); "
             "fp16 weights written to model.onnx.data.", "",
             "| variant | layers | weights GB | nodes | rotary (in-kernel / explicit) | build s (wall) | CPU s | "
             "load average |", "|---|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        load = "/".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(f"| {r['variant']} | {r['layers']} | {r['weight_bytes'] / 1e9:.2f} | {r['nodes']} | "
                     f"{r['rotary']['fused']} / {r['rotary']['explicit']} | {r['build_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{load} |")
    Path(args.output + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
