"""A model larger than the GPU's (emulated) memory through calibration, search and reformation, against
the same run with the model resident, in one process; and a 30B-shaped model memory-mapped from disk.

On the GPU machine (see the README section "Large models and several GPUs" for the wheels)::

    python3 benchmarks/offload.py --output $OUT/offload_7b                                    # (a)
    python3 benchmarks/offload.py --shape llama-30b --layers 40 --phases offload --generations 0 \\
        --forward-repeats 1 --memory-map /tmp/llama30b --output $OUT/offload_30b              # (b)

On the CPU (tiny shapes: checks the script, measures nothing)::

    python benchmarks/offload.py --shape tiny --device cpu --num-samples 4 --seq-len 64 --fitness-seq-len 64 \\
        --population 4 --ratio 0.6 --output /tmp/offload_tiny

(tiny's 16-channel heads have a width grid of 4 channels: 0.5 is below its smallest subnet.)

Timing depends on shapes, not values, so the models are LLaMA-shaped with random weights (fp16). What
one run does, per phase (``--phases resident,offload``):

* **resident**: the whole model on the GPU, ``offload="off"``;
* **offload**: the GPU capped at ``--limit-gib`` (``torch.cuda.set_per_process_memory_fraction``, and the
  memory guard told the same through ``OPTIMUM_SUBNET_MEMORY_LIMIT``), ``offload="auto"``: the guard must
  find that the model does not fit and plan the block streaming itself (the run fails otherwise). ``auto``
  picks the smallest limit the plan's estimate allows (+25%, rounded up to 0.5 GiB), below the weights;

each through ``SubnetOptimizer.preflight`` + ``run`` (the real pass: dense perplexity, importance
calibration, ``--generations`` search generations, reformation, perplexities; nothing saved), timed
per stage, with the peak GPU memory (``max_memory_allocated``) and, for the offload phase, how much of
the transfer the prefetch hides (one streamed forward with and without prefetch, and the same forward
resident, on ``--forward-batch`` windows of ``--fitness-seq-len`` tokens). With ``--memory-map DIR`` the
random weights are first written to ``DIR`` as safetensors (one file per block) and the model is loaded
memory-mapped from there (``load_memory_mapped``, what ``load_model(offload_folder=...)`` does), as a model
larger than the RAM would be. Writes ``<output>.json`` and ``<output>.md``; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import statistics
import string
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/shapes.py
from shapes import LLAMA_7B, LLAMA_30B, TINY  # noqa: E402

SHAPES = {"llama-7b": LLAMA_7B, "llama-30b": LLAMA_30B, "tiny": TINY}
GIB = 2**30


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama-7b")
    p.add_argument("--layers", type=int, help="decoder layers (default: the shape's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--phases", default="resident,offload", help="comma-separated: resident, offload")
    p.add_argument("--limit-gib", default="auto", help="GPU memory cap of the offload phase (GiB, or auto)")
    p.add_argument("--memory-map", metavar="DIR", help="write the weights to DIR and load them memory-mapped")
    p.add_argument("--ratio", type=float, default=0.5, help="target ratio (0.5: smaller reformation statistics)")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=2, help="calibration batch")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--fitness-windows", type=int, default=4)
    p.add_argument("--fitness-seq-len", type=int, default=2048)
    p.add_argument("--eval-seq-len", type=int, default=512)
    p.add_argument("--eval-windows", type=int, default=4)
    p.add_argument("--forward-repeats", type=int, default=3, help="timed streamed forwards (after one warm-up)")
    p.add_argument("--forward-batch", type=int, default=4,
                   help="windows (of --fitness-seq-len tokens) of the timed forward: enough compute per block to "
                        "show what the prefetch hides")
    p.add_argument("--output", required=True, help="path prefix of the .json / .md results")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ inputs
def char_tokenizer():
    """One token per character (the text only feeds random-weight models: timing depends on shapes)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in string.printable:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def text_file(folder: Path, characters: int) -> Path:
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    text, size = [], 0
    while size < characters:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 20))).capitalize() + ". "
        text.append(sentence)
        size += len(sentence)
    path = folder / "text.txt"
    path.write_text("".join(text))
    return path


def model_config(args):
    from transformers import LlamaConfig

    values = dict(SHAPES[args.shape])
    if args.layers:
        values["num_hidden_layers"] = args.layers
    config = LlamaConfig(**values, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    return config


def build_model(args, device):
    """Random weights (std 0.02 keeps fp16 activations finite through the layers), built on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(model_config(args)).to(getattr(torch, args.dtype))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return model.eval()


def write_memory_mapped(args, folder: Path, device) -> dict:
    """Random weights written block by block to ``folder`` (safetensors), never the whole model in RAM."""
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    config = model_config(args)
    dtype = getattr(torch, args.dtype)
    with init_empty_weights():
        skeleton = LlamaForCausalLM(config)
    needed = sum(t.numel() for t in skeleton.state_dict().values()) * dtype.itemsize
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + GIB > free:
        sys.exit(f"{folder}: the weights need {needed / GIB:.1f} GiB but {free / GIB:.1f} GiB are free; "
                 f"pass fewer --layers")
    generator = torch.Generator(device=device).manual_seed(0)
    groups: dict[str, dict] = {}
    for name, tensor in skeleton.state_dict().items():
        key = name.split(".")[2] if name.startswith("model.layers.") else "rest"
        groups.setdefault(key, {})[name] = tensor
    start = time.perf_counter()
    for key, tensors in groups.items():
        values = {}
        for name, meta in tensors.items():
            if meta.dim() == 2:
                value = torch.empty(meta.shape, dtype=dtype, device=device).normal_(0, 0.02, generator=generator)
            else:
                value = torch.ones(meta.shape, dtype=dtype, device=device)
            values[name] = value.cpu()
        save_file(values, str(folder / f"block-{key}.safetensors"))
    config.save_pretrained(folder)
    return {"bytes": needed, "seconds": time.perf_counter() - start, "files": len(groups), "folder": str(folder)}


def run_config(args, text: Path, offload: str):
    from optimum_subnet import SubnetConfig

    p = args.population
    return SubnetConfig.preset(
        "paper", args.ratio, device=args.device, dtype=args.dtype, offload=offload,
        search__population_size=p, search__num_mutations=p // 2, search__num_crossovers=(3 * p) // 10,
        search__top_k=max(2, p // 10), search__generations=args.generations, search__initialization="uniform",
        search__fitness_windows=args.fitness_windows, search__fitness_seq_len=args.fitness_seq_len,
        data__dataset=str(text), data__eval_dataset=str(text), data__num_samples=args.num_samples,
        data__seq_len=args.seq_len, data__batch_size=args.batch_size, data__eval_seq_len=args.eval_seq_len,
        data__eval_max_windows=args.eval_windows, data__eval_batch_size=min(4, args.eval_windows),
        faithfulness__prompts=0)


# --------------------------------------------------------------------------------------- measures
def synchronize(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def drop_page_cache() -> bool:
    """Write dirty pages and drop the page cache (root only), so the first pass really reads the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def forward_seconds(model, ids, repeats=3) -> float:
    import torch

    with torch.no_grad():
        model(ids)
        synchronize(ids.device)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids)
            synchronize(ids.device)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def offload_limit(args, optimizer, config) -> int:
    """The smallest cap the offload plan's estimate allows (+25%, 0.5 GiB steps)."""
    from optimum_subnet.loading import torch_dtype
    from optimum_subnet.pipeline.memory import plan_memory

    shape = optimizer.adapter.shape(optimizer.model.config)
    plan = plan_memory(shape, config.replace(offload="on"), torch_dtype(config.dtype).itemsize, "cuda", 2**60, "-")
    return int(math.ceil(plan.estimate.peak * 1.25 / (GIB / 2)) * (GIB / 2))


def phase(name: str, args, optimizer, text: Path, ids) -> dict:
    import torch

    from optimum_subnet.calibration.offload import BlockStreamer, streamed_forward

    cuda = args.device.startswith("cuda")
    config = run_config(args, text, "off" if name == "resident" else ("auto" if cuda else "on"))
    weights = sum(p.numel() * p.element_size() for p in optimizer.model.parameters())
    entry: dict = {"phase": name, "weights_bytes": weights}
    if name == "offload" and cuda:
        limit = offload_limit(args, optimizer, config) if args.limit_gib == "auto" else int(float(args.limit_gib) * GIB)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total))
        os.environ["OPTIMUM_SUBNET_MEMORY_LIMIT"] = str(limit)
        entry["limit_bytes"] = limit
        entry["limit_below_weights"] = limit < weights
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    plan = optimizer.preflight(config)
    if name == "offload" and not plan.offload:
        sys.exit(f"the memory guard kept the model resident under a cap of {entry.get('limit_bytes')} bytes: "
                 "the cap must be below what the resident run needs")
    try:
        result = optimizer.run(config, plan=plan)
    except torch.cuda.OutOfMemoryError as e:  # the estimate was too low for the cap: say so, keep the other phases
        entry.update(error=f"out of memory: {str(e).splitlines()[0]}", seconds=time.perf_counter() - start,
                     peak_allocated_bytes=torch.cuda.max_memory_allocated(), plan={"plan": "offload"},
                     where=traceback.format_exc(limit=-6))  # which stage's allocation exceeded the estimate
        logging.error("phase %s ran out of memory under its cap: %s", name, entry["error"])
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
            os.environ.pop("OPTIMUM_SUBNET_MEMORY_LIMIT", None)
            torch.cuda.empty_cache()
        return entry
    synchronize(args.device)
    entry["seconds"] = time.perf_counter() - start
    report = result["report"]
    entry.update({
        "plan": report.get("memory"), "spec": result["spec"].key(),
        "params": result["spec"].params(), "timings": report["timings"],
        "search_seconds": report["search"]["seconds"], "search_evaluations": report["search"]["evaluations"],
        "seconds_per_evaluation": report["search"]["seconds_per_evaluation"],
        "reformation_seconds": report["reformation"]["seconds"],
        "ppl": {k: report[k]["ppl"] for k in ("dense", "searched", "subnet")},
    })
    if cuda:  # the pass resets the peak per stage (report["memory"]): the run's peak is the largest stage's
        stage_peaks = (report.get("memory") or {}).get("measured_stage_peak_bytes") or {}
        entry["stage_peak_bytes"] = stage_peaks
        entry["peak_allocated_bytes"] = max([torch.cuda.max_memory_allocated(), *stage_peaks.values()])
        entry["peak_reserved_bytes_last_stage"] = torch.cuda.max_memory_reserved()
    entry["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del result
    # how much of the transfer the prefetch hides: one forward of the dense model, streamed
    model, adapter = optimizer.model, optimizer.adapter
    if name == "resident":
        entry["forward_seconds"] = forward_seconds(model.to(args.device), ids.to(args.device), args.forward_repeats)
    else:
        model.to("cpu")
        for prefetch in (True, False):
            streamer = BlockStreamer(args.device, prefetch=prefetch)
            with streamed_forward(model, adapter, streamer):
                entry[f"streamed_forward_seconds_prefetch_{'on' if prefetch else 'off'}"] = forward_seconds(
                    model, ids.to(args.device), args.forward_repeats)
            streamer.close()
    if cuda:
        torch.cuda.set_per_process_memory_fraction(1.0)
        os.environ.pop("OPTIMUM_SUBNET_MEMORY_LIMIT", None)
        torch.cuda.empty_cache()
    return entry


def markdown(results: dict) -> str:
    g = lambda n: f"{n / GIB:.2f}" if isinstance(n, (int, float)) else "-"  # noqa: E731
    s = lambda n: f"{n:.1f}" if isinstance(n, (int, float)) else "-"  # noqa: E731
    rows = ["| phase | weights GiB | GPU cap GiB | peak GPU allocated GiB | total s | importance s | search s "
            "(s/eval) | reformation s | forward s (prefetch on / off) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for e in results["phases"]:
        if "error" in e:
            rows.append(f"| {e['phase']} | {g(e['weights_bytes'])} | {g(e.get('limit_bytes'))} | "
                        f"{g(e.get('peak_allocated_bytes'))} | {e['error'][:80]} | | | | |")
            continue
        t = e["timings"]
        forward = (s(e["forward_seconds"]) if "forward_seconds" in e else
                   f"{s(e.get('streamed_forward_seconds_prefetch_on'))} / "
                   f"{s(e.get('streamed_forward_seconds_prefetch_off'))}")
        rows.append(f"| {e['phase']} ({(e['plan'] or {}).get('plan', '?')}) | {g(e['weights_bytes'])} | "
                    f"{g(e.get('limit_bytes'))} | {g(e.get('peak_allocated_bytes'))} | {s(e['seconds'])} | "
                    f"{s(t.get('importance'))} | {s(e['search_seconds'])} ({e['seconds_per_evaluation']:.2f}) | "
                    f"{s(e['reformation_seconds'])} | {forward} |")
    stage_rows = []
    for e in results["phases"]:
        estimated = (e.get("plan") or {}).get("estimated_stage_bytes") or {}
        for stage, peak in (e.get("stage_peak_bytes") or {}).items():
            est = estimated.get(stage)
            stage_rows.append(f"| {e['phase']} | {stage} | {g(est)} | {g(peak)} | "
                              f"{f'{peak / est:.2f}' if est else '-'} |")
    if stage_rows:
        rows += ["", "Per stage: the memory guard's estimate against the peak allocated on the GPU in that stage.",
                 "", "| phase | stage | estimate GiB | measured GiB | measured / estimate |",
                 "|---|---|---:|---:|---:|", *stage_rows]
    specs = {e["spec"] for e in results["phases"] if "spec" in e}
    lines = [f"# Offload benchmark: {results['shape']} ({results['layers']} layers, {results['dtype']}) on "
             f"{results['device_name']}", "", *rows, ""]
    if len(results["phases"]) > 1:
        lines.append(f"Same searched spec in every phase: {'yes' if len(specs) == 1 else 'NO'}.")
    if results.get("memory_map"):
        m = results["memory_map"]
        lines.append(f"Weights written to {m['folder']} ({g(m['bytes'])} GiB, {m['files']} files) in "
                     f"{m['seconds']:.0f} s and memory-mapped from there (page cache dropped before loading: "
                     f"{'yes' if m.get('page_cache_dropped') else 'no'}); peak RSS "
                     f"{g(max(e['peak_rss_bytes'] for e in results['phases']))} GiB.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("OPTIMUM_SUBNET_NO_PROGRESS", "1")
    import tempfile

    import torch

    from optimum_subnet import SubnetOptimizer

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="offload-bench-"))
    needed = 2 * (args.num_samples * args.seq_len + args.fitness_windows * args.fitness_seq_len
                  + args.eval_windows * args.eval_seq_len)
    text = text_file(work, max(needed, 200_000))
    tokenizer = char_tokenizer()
    results: dict = {"shape": args.shape, "layers": args.layers or SHAPES[args.shape]["num_hidden_layers"],
                     "dtype": args.dtype, "args": vars(args), "phases": [],
                     "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                     "torch": torch.__version__}
    build_device = args.device if args.device.startswith("cuda") else "cpu"
    if args.memory_map:
        from optimum_subnet.loading import load_memory_mapped

        folder = Path(args.memory_map)
        results["memory_map"] = write_memory_mapped(args, folder, build_device)
        results["memory_map"]["page_cache_dropped"] = drop_page_cache()
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        model = load_memory_mapped(str(folder), folder, config, getattr(torch, args.dtype), work / "converted")
    else:
        model = build_model(args, build_device).to("cpu")
    optimizer = SubnetOptimizer(model, tokenizer, f"{args.shape}-random")
    ids = torch.randint(3, 90, (args.forward_batch, args.fitness_seq_len), generator=torch.Generator().manual_seed(0))
    for name in args.phases.split(","):
        logging.info("=== phase %s", name)
        results["phases"].append(phase(name, args, optimizer, text, ids))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))  # progress survives a kill
    shutil.rmtree(work, ignore_errors=True)
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(table)


if __name__ == "__main__":
    main()
