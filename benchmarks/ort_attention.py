"""ONNX Runtime speed of dense vs subnet, unfused vs GroupQueryAttention-fused attention.

    python benchmarks/ort_attention.py --device cuda --output benchmarks/results/ort_attention
    python benchmarks/ort_attention.py --device cpu --shape tiny --batch-sizes 1 --prompt-lengths 16 --new-tokens 4

One run measures, for each of {dense, subnet} x {unfused, fused}: prefill latency (one forward of
the whole prompt with an empty cache) and decode throughput (new tokens per second, one token per
step, KV cache fed back through IO binding on the device), at each batch size and prompt length.
Ratios (subnet vs dense, fused vs unfused) come from the same run. Medians of repeated, synchronized
timings after warm-up.

Models are built from a LLaMA shape with **random weights** (timing depends on shapes, not values):
``smollm2`` is SmolLM2-135M's shape; the subnet is that shape cut to the per-layer widths of a
searched subnet report (``--subnet-report``: the head sizes and MLP widths of a committed
``core_smollm2.json`` run), or to a uniform 50% when none is given. Every export is validated against
PyTorch (see ``validation.json`` files) before it is timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/shapes.py
from shapes import SMOLLM2_135M, TINYLLAMA_1B  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=1000, max_position_embeddings=2048),
    "smollm2": SMOLLM2_135M,
    "llama-1b": TINYLLAMA_1B,
}


def build_models(shape: str, subnet_report: str | None, ratio_index: int, variants: list[str]):
    """The dense model and one subnet per variant: ``per-head`` (a channel mask per KV head, as our
    default search produces), ``shared`` (one mask per layer), ``shared16`` (one mask per layer and head
    sizes rounded down to multiples of 16: what ``--attention-masks layer --head-dim-multiple 16``
    searches; GroupQueryAttention then rotates in-kernel in every layer)."""
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from optimum_subnet.families import get_adapter
    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.stages.surgery import extract_subnet

    config = LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    dense = LlamaForCausalLM(config).eval()
    widths = None
    if subnet_report:
        data = json.loads(Path(subnet_report).read_text())
        if isinstance(data, dict) and "head_dims" in data:  # a widths file (benchmarks/results/specs/)
            widths = (data["head_dims"], data["intermediate_sizes"])
        else:  # a core_quality report: one of its runs
            run = data[ratio_index] if isinstance(data, list) else data
            widths = (run["subnet"]["head_dims"], run["subnet"]["intermediate_sizes"])
    if not widths or len(widths[0]) != config.num_hidden_layers:
        widths = ([config.head_dim // 2] * config.num_hidden_layers,
                  [config.intermediate_size // 2] * config.num_hidden_layers)
    half = config.head_dim // 2
    subnets = {}
    for variant in variants:
        rng = random.Random(0)
        spec = SubnetSpec.dense(get_adapter(config).shape(config))
        for layer, hd, width in zip(spec.layers, *widths):
            if variant == "shared16":
                hd = max(16, hd // 16 * 16)
            shared = sorted(rng.sample(range(half), hd // 2))
            masks = [sorted(rng.sample(range(half), hd // 2)) if variant == "per-head" else shared
                     for _ in layer.kv_heads]
            layer.attention_channels = [pairs + [p + half for p in pairs] for pairs in masks]
            layer.mlp_channels = sorted(rng.sample(range(config.intermediate_size), width))
        subnets[f"subnet-{variant}"] = (extract_subnet(dense, spec.validate()), spec)
    return dense, subnets


def export_all(models: dict, device: str, dtype: str, workdir: Path, modes: list[str]) -> dict:
    """One ONNX folder per (model, mode); ``fused-static`` times the fused folder with a static KV cache."""
    from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx, read_validation

    folders = {}
    for name, model in models.items():
        if "unfused" in modes:
            folders[(name, "unfused")] = export_onnx(model, workdir / f"{name}-unfused",
                                                     OnnxExportConfig(dtype=dtype, device=device))
        if "fused" in modes or "fused-static" in modes:
            fused = export_onnx(model, workdir / f"{name}-fused",
                                OnnxExportConfig(dtype=dtype, device=device, fuse_attention=True))
            for mode in ("fused", "fused-static"):
                if mode in modes:
                    folders[(name, mode)] = fused
    return {key: {"path": str(path), "validation": read_validation(path)} for key, path in folders.items()}


def time_model(folder: Path, device: str, batch: int, prompt: int, new_tokens: int, repeats: int,
               static: bool = False) -> dict:
    import torch

    from optimum_subnet.runtime.loading import load_ort_model

    model = load_ort_model(folder, "cuda" if device.startswith("cuda") else "cpu", use_io_binding=True)
    if static:  # fixed per-layer KV buffers that GroupQueryAttention updates in place
        model.enable_static_cache(prompt + new_tokens + 1)
    torch_device = model.device
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt), device=torch_device)
    mask = torch.ones((batch, prompt), dtype=torch.long, device=torch_device)

    def sync():
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)

    def prefill():
        return model(ids, attention_mask=mask, use_cache=True)

    def decode(out):
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        attention = mask
        for _ in range(new_tokens):
            attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=1)
            step = model(token, attention_mask=attention, past_key_values=past, use_cache=True)
            past, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
        return token

    for _ in range(2):  # warm-up (session, kernels, allocator)
        decode(prefill())
    sync()
    prefill_times, decode_times = [], []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = prefill()
        sync()
        prefill_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        decode(out)
        sync()
        decode_times.append(time.perf_counter() - start)
    decode_s = statistics.median(decode_times)
    return {"prefill_ms": 1000 * statistics.median(prefill_times), "decode_ms_per_token": 1000 * decode_s / new_tokens,
            "decode_tokens_per_s": batch * new_tokens / decode_s, "repeats": repeats}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="smollm2", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="fp16 on cuda, fp32 on cpu by default")
    parser.add_argument("--subnet-report", default=str(ROOT / "benchmarks" / "results" / "specs" /
                                                        "smollm2_0.8_fast_widths.json"),
                        help="a widths file or a core_quality report (its per-layer head sizes and MLP widths)")
    parser.add_argument("--ratio-index", type=int, default=-1, help="which run of the report (default: the last)")
    parser.add_argument("--modes", nargs="+", default=["unfused", "fused"],
                        choices=["unfused", "fused", "fused-static"],
                        help="attention graphs to time (fused-static: fused + static in-place KV cache)")
    parser.add_argument("--variants", nargs="+", default=["per-head", "shared16"],
                        choices=["per-head", "shared", "shared16"], help="subnet variants (see build_models)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "ort_attention"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")

    import onnxruntime
    import torch

    report_path = args.subnet_report if Path(args.subnet_report).is_file() else None
    dense, subnets = build_models(args.shape, report_path, args.ratio_index, args.variants)
    results = {"shape": args.shape, "device": args.device, "dtype": dtype, "weights": "random (timing only)",
               "subnet_report": report_path,
               "subnets": {name: {"inheriting_ratio": spec.inheriting_ratio(),
                                  "head_dims": [layer.head_dim for layer in spec.layers],
                                  "intermediate_sizes": [layer.intermediate_size for layer in spec.layers]}
                           for name, (_, spec) in subnets.items()},
               "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "timings": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"dense": dense, **{name: model for name, (model, _) in subnets.items()}}
        exports = export_all(models, args.device, dtype, Path(tmp), args.modes)
        results["validation"] = {f"{k[0]}-{k[1]}": v["validation"] for k, v in exports.items()}
        for batch in args.batch_sizes:
            for prompt in args.prompt_lengths:
                for (name, attention), info in exports.items():
                    timing = time_model(Path(info["path"]), args.device, batch, prompt, args.new_tokens, args.repeats,
                                        static=attention == "fused-static")
                    results["timings"].append({"model": name, "attention": attention, "batch": batch,
                                               "prompt": prompt, **timing})
                    logging.info("%s/%s b=%d p=%d: prefill %.2f ms, decode %.1f tok/s", name, attention, batch,
                                 prompt, timing["prefill_ms"], timing["decode_tokens_per_s"])
                    write(results, Path(args.output))  # a run cut short keeps what it measured
    write(results, Path(args.output))
    sys.stdout.write(Path(args.output).with_suffix(".md").read_text())
    return 0


def write(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    rows = {(t["model"], t["attention"], t["batch"], t["prompt"]): t for t in results["timings"]}
    names = list(dict.fromkeys(t["model"] for t in results["timings"]))
    subnets = "; ".join(f"{name}: ratio {info['inheriting_ratio']:.3f}, head sizes {sorted(set(info['head_dims']))}"
                        for name, info in results["subnets"].items())
    repeats = results["timings"][0]["repeats"] if results["timings"] else 0
    lines = [f"# ONNX Runtime: dense vs subnet, unfused vs GroupQueryAttention ({results['shape']} shape, "
             f"{results['dtype']}, {results['gpu'] or results['device']})", "",
             f"Random weights (timing depends on shapes only). {subnets}. onnxruntime "
             f"{results['versions']['onnxruntime']}; IO binding; medians of {repeats} repeats.", "",
             "| batch | prompt | model | attention | prefill ms | decode ms/token | decode tok/s |",
             "|---:|---:|---|---|---:|---:|---:|"]
    for (model, attention, batch, prompt), t in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][3], kv[0][0])):
        lines.append(f"| {batch} | {prompt} | {model} | {attention} | {t['prefill_ms']:.2f} | "
                     f"{t['decode_ms_per_token']:.2f} | {t['decode_tokens_per_s']:.1f} |")
    lines += ["", "| batch | prompt | attention | subnet | subnet/dense prefill speedup | subnet/dense decode speedup |",
              "|---:|---:|---|---|---:|---:|"]
    for (model, attention, batch, prompt), t in sorted(rows.items()):
        if model != "dense":
            continue
        for name in names:
            sub = rows.get((name, attention, batch, prompt))
            if name == "dense" or sub is None:
                continue
            lines.append(f"| {batch} | {prompt} | {attention} | {name} | {t['prefill_ms'] / sub['prefill_ms']:.2f}x | "
                         f"{sub['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}x |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
