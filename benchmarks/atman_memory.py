"""Peak memory and time of AtMan vs a gradient baseline (input x gradient) as the sequence grows.

Reproduces the shape of AtMan's claim (Deiseroth et al., NeurIPS 2023, Sec. 4.3 / Fig. 6): AtMan needs
only forward passes, so its peak memory stays that of a forward pass, while a gradient explanation keeps
every layer's activations for the backward pass and grows faster, running out of memory first. AtMan
pays in time instead: N + 1 forward passes for N explained tokens.

    # on the GPU machine (transformers 5.x is fine), from the repository root:
    PYTHONPATH=$PWD/src python3 benchmarks/atman_memory.py --output $OUT
    # quick end-to-end check on a CPU:
    PYTHONPATH=$PWD/src python benchmarks/atman_memory.py --device cpu --model tiny --lengths 32 64 --output /tmp/am

Methods (``--methods``):

* ``forward``: one plain forward pass (SDPA), the reference "memory of a forward pass";
* ``atman-multiplicative`` / ``atman-log_bias``: AtMan with the paper's row-shifted product (query-chunked
  eager attention) or the additive log(1 - f) bias (SDPA with a float mask), ``--batch-size``
  manipulated sequences per pass, every prompt token explained;
* ``grad-sdpa`` / ``grad-eager``: input x gradient (one forward + backward to the input embeddings,
  weights frozen) with SDPA (memory-efficient kernels) or eager attention (stores every layer's
  attention matrix, as the paper's baselines did).

Memory: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, reported absolute and
above the weights; not measured on CPU. Time: synchronized wall clock, one warm-up, median of
``--repeats``. AtMan's full explanation at 4096 tokens is 4097 passes, so by default its time is measured
on ``--atman-batches`` batches and projected to all batches (every batch has the same shape); pass
``--atman-full`` to time complete explanations. Peak memory is the same either way. An out-of-memory
point is recorded as ``oom`` and longer lengths of that method are skipped. ``--memory-limit-gb``
caps this process's GPU memory (``set_per_process_memory_fraction``) to emulate a smaller card.

Outputs in ``--output``: ``atman_memory.json`` (all numbers + environment), ``atman_memory.md``,
``atman_memory.png`` (if matplotlib is installed); the table is printed last.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/shapes.py
from shapes import SMOLLM2_135M, TINYLLAMA_1B  # noqa: E402

import torch

logger = logging.getLogger("atman_memory")

#: Architectures by name, built with random weights when no trained weights are at hand: time and
#: memory depend on shapes, not on weight values.
SHAPES = {
    "smollm2-135m": SMOLLM2_135M,
    "llama-1b": dict(TINYLLAMA_1B, max_position_embeddings=8192, tie_word_embeddings=False),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=8192),
}
DEFAULT_METHODS = ["forward", "atman-log_bias", "atman-multiplicative", "grad-sdpa", "grad-eager"]


def build_model(name: str, device: str, dtype: torch.dtype):
    """``(model, description)``: the cached trained SmolLM2 if present, a local HF folder, or random
    weights of a named shape."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if name == "smollm2-135m":
        from optimum_subnet.core.files import cache_dir

        folder = cache_dir() / "models" / name
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
            return model.eval(), f"{name}: trained weights from {folder}"
        note = f"{name}: RANDOM weights of its shape (no cached model at {folder}); time and memory depend only on shapes"
    elif name in SHAPES:
        note = f"{name}: random weights of its shape"
    elif Path(name).is_dir():
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(device)
        return model.eval(), f"{name}: weights from the folder"
    else:
        raise SystemExit(f"error: unknown model {name!r}; use one of {', '.join(SHAPES)} or a local folder")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[name]))
    return model.to(dtype).eval(), note


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(error, oom_type)) or "out of memory" in str(error).lower()


def cleanup(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- methods
def target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_forward(model, ids, num_target, batch_size):
    batch = ids.expand(batch_size, -1)

    def run():
        model.config._attn_implementation = "sdpa"
        with torch.no_grad():
            model(input_ids=batch, use_cache=False, logits_to_keep=num_target + 1)
    return run, 1


def make_gradient(model, ids, num_target, attention: str):
    """Input x gradient: relevance of token i = <x_i, dL/dx_i> over the embedding dimension."""
    embed = model.get_input_embeddings()
    targets = ids[-num_target:]

    def run():
        model.config._attn_implementation = attention
        x = embed(ids[None]).detach().requires_grad_(True)
        logits = model(inputs_embeds=x, use_cache=False, logits_to_keep=num_target + 1).logits[:, :-1]
        target_loss(logits, targets[None]).backward()
        relevance = (x.grad * x).sum(-1)
        return relevance
    return run, 1


def make_atman(model, ids, num_target, mode: str, batch_size: int, query_chunk, batches: int | None):
    """AtMan on every prompt token: ``batches`` batches of ``batch_size`` manipulated sequences (None: all).
    Returns the runner and the factor (all batches / measured batches) that projects its time."""
    from optimum_subnet.explain import AtManConfig, AtManExplainer
    from optimum_subnet.explain.atman import suppression_factors

    explainer = AtManExplainer(model, None, AtManConfig(mode=mode, batch_size=batch_size, query_chunk=query_chunk))
    length = ids.numel()
    prompt = list(range(length - num_target))
    factors = torch.cat([torch.zeros(1, length), suppression_factors([[p] for p in prompt], length, 0.9, prompt)])
    total = math.ceil(factors.shape[0] / batch_size)
    measured = total if batches is None else min(total, batches)
    rows = factors[: measured * batch_size]

    def run():
        return explainer.target_losses(ids, num_target, rows)
    return run, total / measured


def measure(run, device: str, repeats: int) -> dict:
    """Warm-up, then peak memory over the first timed run and the median time of ``repeats`` runs."""
    run()
    sync(device)
    cleanup(device)
    weights = torch.cuda.memory_allocated(device) if device.startswith("cuda") else None
    times = []
    peak = None
    for i in range(repeats):
        if device.startswith("cuda") and i == 0:
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
        if device.startswith("cuda") and i == 0:
            peak = torch.cuda.max_memory_allocated(device)
    result = {"status": "ok", "seconds_measured": statistics.median(times), "times": times}
    if peak is not None:
        result.update(peak_bytes=peak, peak_above_weights_bytes=peak - weights, weights_bytes=weights)
    return result


def sanity_check(model, device: str) -> dict:
    """f = 0 must leave the logits unchanged (the hook is live and exact) before anything is timed."""
    from optimum_subnet.explain import Suppression, atman_attention

    ids = torch.randint(0, model.config.vocab_size, (2, 64), device=device, generator=None)
    out = {}
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        reference = model(input_ids=ids, use_cache=False).logits.float()
        for mode in ("multiplicative", "log_bias"):
            with atman_attention(model):
                logits = model(input_ids=ids, use_cache=False,
                               atman=Suppression(torch.zeros(2, 64, device=device), mode, 16)).logits.float()
            out[mode] = float((logits - reference).abs().max() / reference.abs().max())
    return out


# ------------------------------------------------------------------------------------------- outputs
def gib(x) -> str:
    return "-" if x is None else f"{x / 2**30:.2f}"


def cell(point: dict | None, key: str) -> str:
    if point is None:
        return "-"
    if point["status"] != "ok":
        return point["status"]
    if key == "memory":
        return gib(point.get("peak_bytes"))
    return f"{point['seconds']:.3g}{'*' if point.get('projected') else ''}"


def markdown(results: dict) -> str:
    methods, lengths = results["methods"], results["lengths"]
    by = {(p["method"], p["length"]): p for p in results["points"]}
    env = results["environment"]
    lines = [
        "# AtMan vs input x gradient: peak memory and time by sequence length",
        "",
        f"Model: {results['model']}. Device: {env['device_name']}, dtype {results['dtype']}, torch {env['torch']}, "
        f"transformers {env['transformers']}. Target {results['target_tokens']} tokens; every prompt token explained; "
        f"AtMan batch size {results['batch_size']}, query chunk {results['query_chunk']}."
        + (f" GPU memory capped at {results['memory_limit_gb']} GB." if results.get("memory_limit_gb") else ""),
        "",
        "Peak GPU memory (GiB, weights included; weights alone: "
        f"{gib(results.get('weights_bytes'))} GiB)" + (":" if results.get("weights_bytes") is not None else
                                                       ": not measured on CPU (no allocator statistics)."),
        "",
        "| tokens | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for n in lengths:
        lines.append(f"| {n} | " + " | ".join(cell(by.get((m, n)), "memory") for m in methods) + " |")
    lines += ["", "Time per explanation (s; * projected from the measured AtMan batches to all N + 1 passes):", "",
              "| tokens | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for n in lengths:
        lines.append(f"| {n} | " + " | ".join(cell(by.get((m, n)), "time") for m in methods) + " |")
    lines += ["", f"f = 0 sanity check (max |logit difference| / max |logit|): {results['sanity']}"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot")
        return False
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    peaks = [p["peak_bytes"] / 2**30 for p in results["points"] if p["status"] == "ok" and "peak_bytes" in p]
    cap = results["memory_limit_gb"] * 1e9 / 2**30 if results.get("memory_limit_gb") else None
    oom_y = cap if cap else 1.05 * max(peaks, default=1.0)  # where an out-of-memory point is drawn
    for index, method in enumerate(results["methods"]):
        color = f"C{index}"
        points = [p for p in results["points"] if p["method"] == method]
        ok = [p for p in points if p["status"] == "ok"]
        xs = [p["length"] for p in ok]
        if peaks:
            ax_mem.plot(xs, [p["peak_bytes"] / 2**30 for p in ok], marker="o", color=color, label=method)
            ooms = [p["length"] for p in points if p["status"] == "oom"]
            ax_mem.plot(ooms, [oom_y] * len(ooms), marker="x", markersize=12, linestyle="none", color=color)
        ax_time.plot(xs, [p["seconds"] for p in ok], marker="o", color=color, label=method)
    if peaks and results.get("weights_bytes"):
        ax_mem.axhline(results["weights_bytes"] / 2**30, color="gray", linestyle=":", label="weights")
    if cap:
        ax_mem.axhline(cap, color="gray", linestyle="--", label="memory cap")
    for ax, label in ((ax_mem, "peak GPU memory (GiB)"), (ax_time, "seconds per explanation")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_time.set_yscale("log")
    ax_mem.set_title("memory (x: out of memory)")
    ax_time.set_title("time")
    if ax_mem.get_legend_handles_labels()[0]:
        ax_mem.legend(fontsize=8)
    else:
        ax_mem.text(0.5, 0.5, "memory not measured on CPU", ha="center", transform=ax_mem.transAxes)
        ax_time.legend(fontsize=8)
    fig.suptitle(results["model"][:110], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for atman_memory.json / .md / .png")
    parser.add_argument("--model", default="smollm2-135m", help=f"{', '.join(SHAPES)} or a local HF folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=DEFAULT_METHODS)
    parser.add_argument("--target-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1, help="AtMan: manipulated sequences per forward pass")
    parser.add_argument("--query-chunk", type=int, default=512, help="AtMan: queries per attention step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atman-batches", type=int, default=4, help="AtMan batches timed (projected to all)")
    parser.add_argument("--atman-full", action="store_true", help="time complete AtMan explanations")
    parser.add_argument("--memory-limit-gb", type=float, help="cap GPU memory to emulate a smaller card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: CUDA requested but no GPU is visible; use --device cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    if any(n <= args.target_tokens for n in args.lengths):
        raise SystemExit("error: every length must exceed --target-tokens")
    if args.memory_limit_gb and device.startswith("cuda"):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_limit_gb * 1e9 / total), device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    import transformers

    model, description = build_model(args.model, device, dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    logger.info("model: %s", description)
    sync(device)
    environment = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": device, "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else
        platform.processor() or "cpu", "threads": torch.get_num_threads(),
    }
    results = {
        "model": description, "dtype": str(dtype).replace("torch.", ""), "lengths": args.lengths,
        "methods": args.methods, "target_tokens": args.target_tokens, "batch_size": args.batch_size,
        "query_chunk": args.query_chunk, "repeats": args.repeats, "memory_limit_gb": args.memory_limit_gb,
        "atman_timing": "full" if args.atman_full else f"projected from {args.atman_batches} batches",
        "weights_bytes": torch.cuda.memory_allocated(device) if device.startswith("cuda") else None,
        "environment": environment, "sanity": sanity_check(model, device), "points": [],
    }
    logger.info("f = 0 sanity check: %s", results["sanity"])
    generator = torch.Generator().manual_seed(0)
    failed: set[str] = set()
    for length in args.lengths:
        ids = torch.randint(0, model.config.vocab_size, (length,), generator=generator).to(device)
        for method in args.methods:
            point = {"method": method, "length": length}
            if method in failed:
                point["status"] = "skipped"
                results["points"].append(point)
                continue
            if method == "forward":
                run, scale = make_forward(model, ids, args.target_tokens, args.batch_size)
            elif method.startswith("grad-"):
                run, scale = make_gradient(model, ids, args.target_tokens, method.split("-", 1)[1])
            else:
                run, scale = make_atman(model, ids, args.target_tokens, method.split("-", 1)[1], args.batch_size,
                                        args.query_chunk, None if args.atman_full else args.atman_batches)
            try:
                point.update(measure(run, device, args.repeats))
                point["seconds"] = point["seconds_measured"] * scale
                point["projected"] = scale != 1
            except Exception as e:  # noqa: BLE001 - only out-of-memory is expected; anything else is re-raised
                if not is_oom(e):
                    raise
                point["status"] = "oom"
                failed.add(method)
            finally:
                del run
                model.config._attn_implementation = "sdpa"
                cleanup(device)
            logger.info("%-22s %5d tokens: %s", method, length,
                        point["status"] if point["status"] != "ok" else
                        f"peak {gib(point.get('peak_bytes'))} GiB, {point['seconds']:.3g} s")
            results["points"].append(point)
            (out / "atman_memory.json").write_text(json.dumps(results, indent=2) + "\n")  # keep partial results
    (out / "atman_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "atman_memory.md").write_text(text)
    plot(results, out / "atman_memory.png")
    sys.stdout.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
