"""Decode speed of directly built ONNX graphs on ONNX Runtime CUDA (ORTGenerator, CUDA graphs), dense and
heterogeneous subnets, against onnxruntime-genai and the bandwidth floor, in one run.

On the GPU machine (after the wheel parts of ``../shared/docs/GPU.md``, with onnxruntime-genai in ``$HOME/site2``)::

    export PYTHONPATH=$HOME/site:$PWD PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1
    python3 benchmarks/ort_decode.py --out $OUT --profile llama7b:dense,llama7b:0.5

On a CPU (a test of the script itself: tiny shapes, no CUDA graph, no genai)::

    python benchmarks/ort_decode.py --device cpu --shapes tiny --batches 1,2 --prompts 8 --new-tokens 4 --out /tmp/od

What one run does, per shape (``tinyllama``: TinyLlama 1.1B's; ``llama7b``: hidden 4096, 32 layers, MLP 11008):

* the device copy rate (a 2 GiB device-to-device copy; read + written bytes over time), so that the
  **floor** of a decode step is the model's weight bytes over that rate;
* models with **random fp16 weights** generated on the device (timing depends on shapes, not values),
  written by the direct builder (``optimum_subnet.onnx.builder``; its build time is recorded): ``dense``,
  and subnets at 0.8 and 0.5 of the parameters with the search space's per-layer widths (its global
  initial subnet from random importance scores, then random mutations inside the budget; at 0.5 depth
  search drops layers) and its default masks (one channel mask per KV head: explicit rotary), and the
  same widths with the other mask kind (``-layer``: one mask per layer, rotary in-kernel where the head
  size allows);
* each model decoded greedily by :class:`~optimum_subnet.runtime.generator.ORTGenerator` (IO binding to
  fixed buffers, the decode step a CUDA-graph replay) at every batch size x prompt length: prefill
  latency and decode tokens/s, after one warm-up generation (which captures the graph), in ``--repeats``
  timed generations (each figure reported per repeat, and their spread);
* onnxruntime-genai (its builder's graph of the same dense shape, its generator, CUDA graph on at batch 1
  and off for batch > 1, which it refuses with the graph) as a subprocess stage in genai's environment;
* a strict placement check (a session that may not fall back to the CPU EP: it loads only if every node
  runs on CUDA) and, with ``--profile``, ONNX Runtime's per-kernel profile of one decode step;
* the fixed per-step cost, fitted over the variants at batch 1 (``ms/step = fixed + bytes / bandwidth``).

JSON goes to ``$OUT/ort_decode.json`` after every row (a failing configuration is a row with its error;
nothing measured before it is lost); ``$OUT/ort_decode.md`` and the short table printed last at the end.
``--time-budget`` (seconds) skips what would start after it, recording what was skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/shapes.py
from shapes import LLAMA_7B, TINYLLAMA_1B  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOG = logging.getLogger("ort_decode")

SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=512, max_position_embeddings=512),
    "tinyllama": TINYLLAMA_1B,
    "llama7b": LLAMA_7B,
}
VARIANTS = ("dense", "genai", "0.5", "0.8", "0.5-layer", "0.8-layer")


# ------------------------------------------------------------------------------------------ results
class Results:
    """The run's JSON, rewritten atomically after every change."""

    def __init__(self, out: Path, meta: dict):
        self.path = out / "ort_decode.json"
        self.data = {"meta": meta, "copy_rate": {}, "models": [], "rows": [], "skipped": [], "errors": [],
                     "fits": {}, "placement": [], "profiles": []}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)

    def add(self, key: str, value) -> None:
        self.data[key].append(value)
        self.save()


def elapsed_ok(args, start: float, what: str, results: Results) -> bool:
    if time.perf_counter() - start > args.time_budget:
        results.add("skipped", {"what": what, "reason": f"time budget {args.time_budget}s spent"})
        LOG.warning("skipped (time budget): %s", what)
        return False
    return True


# ------------------------------------------------------------------------------------------ models
def dense_config(shape: str):
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def search_spec(config, ratio: float, seed: int = 0):
    """A heterogeneous subnet from the search space at its default settings (per-KV-head masks, head sizes
    in multiples of 8, MLP widths in multiples of 64, depth search below 0.7): the global initial subnet
    from random importance scores, layers dropped middle-out as depth search may (0.5), then random
    mutations repaired into the budget (so the widths differ per layer)."""
    import torch

    from optimum_subnet import SubnetConfig
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.stages import search_space

    shape = get_adapter(config).shape(config)
    generator = torch.Generator().manual_seed(seed)
    scores_a = [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                for _ in range(shape.num_layers)]
    scores_m = [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)]
    space = search_space(shape, SubnetConfig.preset("paper", ratio), scores_a, scores_m, scores_a, scores_m)
    genome = space.global_initial()
    rng = random.Random(seed)
    if space.depth_search:
        genes = list(genome)
        inner = sorted(range(1, shape.num_layers - 1), key=lambda i: (abs(i - (shape.num_layers - 1) / 2), i))
        for i in inner[: shape.num_layers - space.min_depth]:
            genes[i] = None
        genome = space.repair(tuple(genes), rng) or genome
    for _ in range(12):
        mutated = space.mutate(genome, rng, depth_prob=0.0, ratio_prob=0.3, mask_prob=0.2, overlap=0.5)
        genome = mutated or genome
    return space.to_spec(genome, {"ratio": ratio})


def layer_masks(spec):
    """The same widths with one channel mask per layer (the first KV head's, for every KV head)."""
    import copy

    out = copy.deepcopy(spec)
    for layer in out.layers:
        layer.attention_channels = [list(layer.attention_channels[0])] * len(layer.attention_channels)
    return out.validate()


def subnet_config(config, spec):
    """The subnet's config (per-layer entries as surgery writes them; LLaMA's softmax scale)."""
    from optimum_subnet.families.llama import SubnetLlamaConfig

    shape = spec.shape
    data = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path"):
        data.pop(key, None)
    data["head_dim"] = shape.head_dim
    data["subnet_layers"] = [{
        "source_layer": layer.source_index, "num_attention_heads": layer.num_kv_heads * shape.group_size,
        "num_key_value_heads": layer.num_kv_heads, "head_dim": layer.head_dim,
        "rope_channels": [list(c) for c in layer.attention_channels], "intermediate_size": layer.intermediate_size,
        "attention_out_bias": False, "mlp_out_bias": False, "softmax_scale": shape.head_dim ** -0.5,
    } for layer in spec.layers]
    return SubnetLlamaConfig(**data)


def variant_config(shape: str, variant: str):
    config = dense_config(shape)
    if variant == "dense":
        return config, None
    ratio = float(variant.split("-")[0])
    spec = search_spec(config, ratio)
    if variant.endswith("-layer"):
        spec = layer_masks(spec)
    return subnet_config(config, spec), spec


# ------------------------------------------------------------------------------------------ measuring
def copy_rate(device) -> dict:
    import torch

    if device.type != "cuda":
        return {"bytes_per_s": None}
    n = 2**30  # fp16 elements: 2 GiB
    a = torch.empty(n, dtype=torch.float16, device=device).normal_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    return {"bytes_per_s": 2 * 2 * n / statistics.median(samples), "samples_s": samples,
            "definition": "bytes read + bytes written by a 2 GiB device-to-device copy, over its median time"}


def build(config, folder: Path, args, device) -> dict:
    import torch

    from optimum_subnet.onnx.builder import BuildConfig, RandomWeights, build_decoder

    dtype = "fp16" if device.type == "cuda" else "fp32"
    source = RandomWeights(config, dtype=torch.float16 if dtype == "fp16" else torch.float32, device=str(device),
                           tied=False)
    positions = max(args.prompts) + args.new_tokens + 8
    if folder.exists():
        shutil.rmtree(folder)
    summary = build_decoder(source, config, folder, BuildConfig(dtype=dtype, max_positions=positions,
                                                                external_data=device.type == "cuda"))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return summary


def open_session(path: Path, device, modes, results: "Results", what: str):
    """The first session that loads among ``modes`` ((CUDA graph, our torch stream) pairs); refusals recorded."""
    import torch

    from optimum_subnet.runtime.generator import create_session

    error = None
    for graph, own_stream in modes:
        stream = torch.cuda.Stream(device) if own_stream and device.type == "cuda" else None
        try:
            return create_session(path, device.type, cuda_graph=graph, stream=stream), (graph, stream)
        except Exception as e:  # noqa: BLE001
            error = f"{type(e).__name__}: {str(e)[:500]}"
            results.add("errors", {"what": f"{what}: session with cuda_graph={graph} user_stream={own_stream}",
                                   "error": error})
    raise RuntimeError(f"no session could be created: {error}")


def placement_check(path: Path) -> dict:
    """Load the graph with CPU fallback disabled: it loads only if every node runs on the CUDA EP."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.log_severity_level = 1  # warnings about placement and Memcpy go to the log
    try:
        session = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider"])
        del session
        return {"all_nodes_on_cuda": True}
    except Exception as e:  # noqa: BLE001
        return {"all_nodes_on_cuda": False, "error": str(e).splitlines()[0][:500]}


def measure(session, stream, batch: int, prompt: int, args, device, cuda_graph: bool, vocab: int) -> dict:
    import torch

    from optimum_subnet.runtime.generator import ORTGenerator

    generator = ORTGenerator(session, max_length=prompt + args.new_tokens + 1, batch_size=batch,
                             cuda_graph=cuda_graph, stream=stream)
    ids = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(batch * 1000 + prompt))
    ids = ids.to(device)
    steps = args.new_tokens + 1  # the first token comes from the prefill
    generator.generate(ids, max_new_tokens=steps)  # warm-up: ONNX Runtime's first run, then the capture
    prefill, per_step = [], []
    for _ in range(args.repeats):
        generator.generate(ids, max_new_tokens=steps)
        prefill.append(generator.timing["prefill_s"])
        per_step.append(generator.timing["decode_s"] / generator.timing["decode_steps"])
    del generator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    tok = [batch / s for s in per_step]
    return {"prefill_ms_all": [1000 * p for p in prefill], "ms_per_step_all": [1000 * s for s in per_step],
            "tokens_per_s_all": tok, "prefill_ms": 1000 * statistics.median(prefill),
            "decode_tokens_per_s": statistics.median(tok),
            "spread": (max(tok) - min(tok)) / statistics.median(tok) if len(tok) > 1 else 0.0}


def profile_step(path: Path, args, device, out: Path, tag: str) -> dict:
    """One batch-1 decode step, profiled without the CUDA graph (node by node): ONNX Runtime's profiler
    (per node; on CUDA its times are the host-side launches) and, on CUDA, torch's CUPTI profiler over the
    same step (every GPU kernel ONNX Runtime launches, with its device time). Summaries per op type and per
    kernel go to the JSON; the node list and the kernel table to ``profile_<tag>.json``."""
    import onnxruntime as ort
    import torch

    from optimum_subnet.runtime.generator import ORTGenerator

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(out / f"ortprofile_{tag}")
    providers = [("CUDAExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"}), "CPUExecutionProvider"] \
        if device.type == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    generator = ORTGenerator(session, max_length=min(args.prompts) + 8, batch_size=1)
    ids = torch.randint(3, 100, (1, min(args.prompts))).to(device)
    generator.generate(ids, max_new_tokens=4)
    kernels = None
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        generator._run(generator.decode_binding, generator.decode_options)  # warm
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            generator._run(generator.decode_binding, generator.decode_options)  # one decode step
            torch.cuda.synchronize()
        kernels = sorted(({"kernel": e.key[:160], "count": e.count, "device_us": e.device_time_total}
                          for e in prof.key_averages()), key=lambda k: -k["device_us"])
    raw = session.end_profiling()
    events = json.loads(Path(raw).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last = runs[-1]
    inside = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
              and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]]
    by_op: dict[str, dict] = {}
    for e in inside:
        op = e.get("args", {}).get("op_name", "?")
        entry = by_op.setdefault(op, {"count": 0, "us": 0})
        entry["count"] += 1
        entry["us"] += e["dur"]
    kept = out / f"profile_{tag}.json"
    kept.write_text(json.dumps({"model_run_us": last["dur"], "nodes": inside, "gpu_kernels": kernels}, indent=0))
    Path(raw).unlink(missing_ok=True)
    del generator, session
    summary = {"tag": tag, "model_run_us": last["dur"], "node_us": sum(e["dur"] for e in inside),
               "nodes": len(inside), "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]["us"])),
               "file": kept.name}
    if kernels is not None:
        summary.update(gpu_kernel_us=sum(k["device_us"] for k in kernels),
                       gpu_kernel_launches=sum(k["count"] for k in kernels), top_gpu_kernels=kernels[:15])
    return summary


# ------------------------------------------------------------------------------------------ genai
def write_hf_folder(config, folder: Path, device) -> None:
    """A LLaMA checkpoint of ``config``'s shape with random fp16 weights (sharded safetensors) and a small
    tokenizer: what genai's model builder reads."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from optimum_subnet.onnx.builder import RandomWeights

    folder.mkdir(parents=True, exist_ok=True)
    config.torch_dtype = "float16"
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    source = RandomWeights(config, dtype=torch.float16, device=str(device), tied=False)
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    shard, shard_bytes, index, n = {}, 0, {}, 0

    def flush():
        nonlocal shard, shard_bytes, n
        if shard:
            name = f"model-{n:05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            index.update({k: name for k in shard})
            shard, shard_bytes, n = {}, 0, n + 1

    def put(name, tensor):
        nonlocal shard_bytes
        shard[name] = tensor.detach().to(torch.float16).cpu().contiguous()
        shard_bytes += shard[name].numel() * 2
        if shard_bytes > 4 * 2**30:
            flush()

    put("model.embed_tokens.weight", source.embedding())
    for i in range(config.num_hidden_layers):
        for role, module in names.items():
            put(f"model.layers.{i}.{module}.weight", source.projection(i, role)[0])
        put(f"model.layers.{i}.input_layernorm.weight", source.norm(i, "input"))
        put(f"model.layers.{i}.post_attention_layernorm.weight", source.norm(i, "post_attention"))
    put("model.norm.weight", source.final_norm())
    put("lm_head.weight", source.lm_head())
    flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): c - 29 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>") \
        .save_pretrained(folder)


def run_genai(shape: str, args, device, work: Path, results: Results, start: float) -> None:
    env = dict(os.environ, PYTHONPATH=args.genai_pythonpath, PYTHONUNBUFFERED="1")
    probe = subprocess.run([sys.executable, "-c", "import onnxruntime_genai"], env=env, capture_output=True,
                           text=True)
    if probe.returncode != 0:
        results.add("skipped", {"what": f"genai {shape}", "reason": "onnxruntime_genai not importable from "
                                f"PYTHONPATH={args.genai_pythonpath}: {probe.stderr.strip().splitlines()[-1:]}"})
        return
    hf, built = work / f"hf_{shape}", work / f"genai_{shape}"
    for folder in (hf, built):
        shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    write_hf_folder(dense_config(shape), hf, device)
    t1 = time.perf_counter()
    precision, ep = ("fp16", "cuda") if device.type == "cuda" else ("fp32", "cpu")  # cpu: a test of the stage
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(built), "-p",
               precision, "-e", ep, "-c", str(work / "genai_cache")]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.genai_build_timeout)
    t2 = time.perf_counter()
    shutil.rmtree(hf, ignore_errors=True)
    info = {"shape": shape, "hf_write_s": t1 - t0, "genai_build_s": t2 - t1, "builder_rc": proc.returncode}
    if proc.returncode != 0:
        info["builder_log"] = (proc.stdout + proc.stderr)[-3000:]
        results.add("errors", {"what": f"genai build {shape}", **info})
        return
    try:
        import onnx

        graph = onnx.load(str(built / "model.onnx"), load_external_data=False).graph
        info["nodes"] = len(graph.node)
    except Exception as e:  # noqa: BLE001
        info["nodes_error"] = str(e)[:200]
    results.add("models", {"shape": shape, "variant": "genai", **info})
    # batch 1 with its CUDA graph; every batch without (genai refuses batched prompts with the graph on)
    for graph_on, batches in ((1, [1]), (0, args.batches)) if device.type == "cuda" else ((0, args.batches),):
        if not elapsed_ok(args, start, f"genai {shape} graph={graph_on}", results):
            break
        out_json = work / f"genai_{shape}_{graph_on}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "genai_decode.py"), "--model", str(built), "--batches",
                   ",".join(map(str, batches)), "--prompts", ",".join(map(str, args.prompts)), "--new-tokens",
                   str(args.new_tokens), "--repeats", str(args.repeats), "--cuda-graph", str(graph_on), "--vocab",
                   str(SHAPES[shape]["vocab_size"]), "--json", str(out_json)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.genai_run_timeout)
        rows = json.loads(out_json.read_text()) if out_json.exists() else []
        for row in rows:
            results.add("rows", {"shape": shape, "variant": "dense", **row})
        if proc.returncode != 0 or not rows:
            results.add("errors", {"what": f"genai run {shape} graph={graph_on}", "rc": proc.returncode,
                                   "log": (proc.stdout + proc.stderr)[-3000:]})
    shutil.rmtree(built, ignore_errors=True)


# ------------------------------------------------------------------------------------------ report
def fits(results: Results, prompt: int) -> None:
    """Per shape, at batch 1 and the shortest prompt: ms/step = fixed + bytes / bandwidth over our variants."""
    rows = [r for r in results.data["rows"] if r.get("engine") == "ORTGenerator" and r["batch"] == 1
            and "error" not in r and r["prompt"] == prompt]
    bytes_of = {(m["shape"], m["variant"]): m.get("weight_bytes") for m in results.data["models"]}
    for shape in {r["shape"] for r in rows}:
        points = [(bytes_of[(shape, r["variant"])], 1000 / r["decode_tokens_per_s"]) for r in rows
                  if r["shape"] == shape and bytes_of.get((shape, r["variant"]))]
        if len(points) < 2:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
        results.data["fits"][shape] = {"fixed_ms_per_step": my - slope * mx,
                                       "effective_bytes_per_s": 1e3 / slope if slope > 0 else None,  # slope: ms per byte
                                       "points": points}
    results.save()


def table(results: Results) -> str:
    data = results.data
    rate = data["copy_rate"].get("bytes_per_s")
    models = {(m["shape"], m["variant"]): m for m in data["models"]}
    dense_tok = {(r["shape"], r["batch"], r["prompt"]): r["decode_tokens_per_s"] for r in data["rows"]
                 if r["variant"] == "dense" and r.get("engine") == "ORTGenerator" and "error" not in r}
    genai_tok = {(r["shape"], r["batch"], r["prompt"]): r["decode_tokens_per_s"] for r in data["rows"]
                 if r.get("engine") == "onnxruntime-genai" and "error" not in r and r.get("cuda_graph") == (r["batch"] == 1)}
    lines = [f"copy rate {rate / 1e12:.2f} TB/s" if rate else "copy rate: n/a (no GPU)",
             "| shape | model | engine | batch | prompt | prefill ms | decode tok/s (repeats) | spread | % floor | "
             "vs dense | ideal | vs genai dense |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['variant']} | {r.get('engine', '?')} | {r['batch']} | {r['prompt']} | "
                         f"error: {r['error'][:80]} | | | | | | |")
            continue
        m = models.get((r["shape"], r["variant"] if r.get("engine") == "ORTGenerator" else "genai"), {})
        dense = models.get((r["shape"], "dense"), {})
        wb = m.get("weight_bytes") or dense.get("weight_bytes")
        floor = rate / wb * r["batch"] if rate and wb else None
        key = (r["shape"], r["batch"], r["prompt"])
        ideal = dense.get("weight_bytes") / m["weight_bytes"] if m.get("weight_bytes") and dense.get("weight_bytes") \
            else None
        vs_dense = r["decode_tokens_per_s"] / dense_tok[key] if key in dense_tok else None
        vs_genai = r["decode_tokens_per_s"] / genai_tok[key] if key in genai_tok else None
        engine = r.get("engine", "?") + (" +graph" if r.get("cuda_graph") else "")
        reps = ", ".join(f"{t:.0f}" for t in r.get("tokens_per_s_all", []))
        tok = r["decode_tokens_per_s"]
        share = "-" if floor is None else f"{100 * tok / floor:.0f}%"
        subnet = r["variant"] != "dense"
        cells = [r["shape"], r["variant"], engine, str(r["batch"]), str(r["prompt"]), f"{r['prefill_ms']:.1f}",
                 f"{tok:.0f} ({reps})", f"{100 * r.get('spread', 0):.1f}%", share,
                 f"{vs_dense:.2f}x" if vs_dense is not None and subnet else "-",
                 f"{ideal:.2f}x" if ideal is not None and subnet else "-",
                 f"{vs_genai:.2f}x" if vs_genai is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for shape, fit in data["fits"].items():
        bw = fit["effective_bytes_per_s"]
        lines.append(f"fit {shape} (batch 1): {fit['fixed_ms_per_step']:.3f} ms fixed per step + weight bytes / "
                     f"{'-' if not bw else f'{bw / 1e12:.2f} TB/s'}")
    for m in data["models"]:
        lines.append(f"model {m['shape']} {m['variant']}: " + ", ".join(
            f"{k} {v if not isinstance(v, float) else round(v, 2)}" for k, v in m.items()
            if k in ("weight_bytes", "nodes", "build_s", "rotary", "genai_build_s", "layers")))
    for p in data["profiles"]:
        gpu = (f", GPU kernels {p['gpu_kernel_us']:.0f} us in {p['gpu_kernel_launches']} launches"
               if p.get("gpu_kernel_us") is not None else "")
        top = ", ".join(f"{op} {v['us']}us/{v['count']}" for op, v in list(p["by_op"].items())[:5])
        lines.append(f"profile {p['shape']} {p['variant']}: run {p['model_run_us']} us, {p['nodes']} nodes{gpu}; {top}")
    for p in data["placement"]:
        lines.append(f"placement {p['shape']} {p['variant']}: all nodes on CUDA = {p['all_nodes_on_cuda']}"
                     + (f" ({p.get('error')})" if p.get("error") else ""))
    for s in data["skipped"]:
        lines.append(f"skipped: {s['what']} ({s['reason']})")
    for e in data["errors"]:
        lines.append(f"error: {e['what']}: {str(e.get('error') or e.get('log') or e.get('builder_log'))[-300:]}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "ort_decode_out"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shapes", default="llama7b,tinyllama", help="in order of priority (the time budget)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="in order of priority")
    parser.add_argument("--layer-mask-batches", default="1",
                        help="batch sizes measured for the other mask kind (-layer variants)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prompts", default="128,2048")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", default="", help="shape:variant,... to profile one decode step (e.g. "
                                                      "llama7b:dense,llama7b:0.5)")
    parser.add_argument("--placement", default="tinyllama:dense,tinyllama:0.5",
                        help="shape:variant,... to load with CPU fallback disabled (every node on CUDA)")
    parser.add_argument("--time-budget", type=float, default=420, help="seconds; later work is skipped")
    parser.add_argument("--work", default="/tmp/ort_decode_work", help="scratch folder for the graphs")
    parser.add_argument("--genai-pythonpath", default=os.path.expanduser("~/site2"))
    parser.add_argument("--genai-build-timeout", type=int, default=240)
    parser.add_argument("--genai-run-timeout", type=int, default=240)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.layer_mask_batches = [int(b) for b in args.layer_mask_batches.split(",")]
    args.prompts = [int(p) for p in args.prompts.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("optimum_subnet", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.perf_counter()
    import torch

    from optimum_subnet.core.environment import environment

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible (use --device cpu for a test of the script)")
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    results = Results(out, {"args": vars(args), "environment": environment(device), "onnxruntime": ort.__version__,
                            "note": "random fp16 weights; timings depend on shapes, not values"})
    results.data["copy_rate"] = copy_rate(device)
    results.save()
    profiles = {tuple(p.split(":")) for p in args.profile.split(",") if p}
    placements = {tuple(p.split(":")) for p in args.placement.split(",") if p}
    for shape in args.shapes.split(","):
        for variant in args.variants.split(","):
            if not elapsed_ok(args, start, f"{shape} {variant}", results):
                continue
            if variant == "genai":
                try:
                    run_genai(shape, args, device, work, results, start)
                except Exception as e:  # noqa: BLE001
                    results.add("errors", {"what": f"genai {shape}", "error": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()[-2000:]})
                continue
            folder = work / f"{shape}_{variant}"
            session = None
            try:
                config, spec = variant_config(shape, variant)
                t0 = time.perf_counter()
                summary = build(config, folder, args, device)
                model = {"shape": shape, "variant": variant, "build_s": time.perf_counter() - t0,
                         "weight_bytes": summary["weight_bytes"], "nodes": summary["nodes"],
                         "rotary": summary["rotary"], "layers": summary["layers"], "op_counts": summary["op_counts"]}
                if spec is not None:
                    model["spec"] = spec.summary()
                    model["inheriting_ratio"] = spec.inheriting_ratio()
                results.add("models", model)
                if (shape, variant) in placements and device.type == "cuda":
                    results.add("placement", {"shape": shape, "variant": variant,
                                              **placement_check(folder / "model.onnx")})
                # CUDA graph + our stream (the default path); should ONNX Runtime refuse either, the next
                # mode down is measured and the refusal recorded
                modes = [(True, True), (True, False), (False, True)] if device.type == "cuda" else [(False, False)]
                session, mode = open_session(folder / "model.onnx", device, modes, results, f"{shape} {variant}")
                for batch in (args.layer_mask_batches if variant.endswith("-layer") else args.batches):
                    for prompt in args.prompts:
                        what = f"{shape} {variant} batch {batch} prompt {prompt}"
                        if not elapsed_ok(args, start, what, results):
                            continue
                        row = {"shape": shape, "variant": variant, "engine": "ORTGenerator", "batch": batch,
                               "prompt": prompt, "new_tokens": args.new_tokens}
                        for attempt in range(2):
                            cuda_graph, stream = mode[0], mode[1]
                            row.update(cuda_graph=cuda_graph, user_stream=stream is not None)
                            try:
                                row.update(measure(session, stream, batch, prompt, args, device, cuda_graph,
                                                   config.vocab_size))
                                row.pop("error", None)
                                break
                            except Exception as e:  # noqa: BLE001 - keep the other configurations' numbers
                                row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                                row["traceback"] = traceback.format_exc()[-2000:]
                                if not cuda_graph or attempt:
                                    break
                                # the captured step failed: measure this and later rows without the graph
                                row["graph_error"] = row["error"]
                                session = None
                                gc.collect()
                                session, mode = open_session(folder / "model.onnx", device, [(False, True)], results,
                                                             f"{shape} {variant} (no graph)")
                        results.add("rows", row)
                        LOG.info("%s: %s", what, {k: row.get(k) for k in ("decode_tokens_per_s", "prefill_ms",
                                                                          "error")})
                del session
                session = None
                if (shape, variant) in profiles:
                    results.add("profiles", {"shape": shape, "variant": variant,
                                             **profile_step(folder / "model.onnx", args, device, out,
                                                            f"{shape}_{variant}")})
            except Exception as e:  # noqa: BLE001
                results.add("errors", {"what": f"{shape} {variant}", "error": f"{type(e).__name__}: {str(e)[:500]}",
                                       "traceback": traceback.format_exc()[-2000:]})
            finally:
                session = None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                shutil.rmtree(folder, ignore_errors=True)
    fits(results, min(args.prompts))
    results.data["total_s"] = time.perf_counter() - start
    results.save()
    text = table(results)
    (out / "ort_decode.md").write_text("# ORT decode benchmark\n\n" + text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
