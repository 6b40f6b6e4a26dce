"""Speed and memory of a subnet against its dense model, measured in one run.

``benchmark(model, baseline, config)`` times, for the subnet and (when given) the dense baseline:

* **prefill** latency: one forward of the whole prompt with an empty KV cache;
* **decode** throughput: ``new_tokens`` greedy steps of one token each, the KV cache fed back;
* **peak memory**: on CUDA the device's peak (PyTorch's allocator for the PyTorch backend, the
  device-wide used memory for ONNX Runtime); on CPU the process's resident set after the run;
* **weight bytes** of each model, from which the ideal decode speedup (dense bytes / subnet bytes)
  and the ratios measured against it are reported.

Backends: ``onnxruntime`` (an exported folder, or a model folder exported on the fly into a
temporary folder with the default builder; a directly built graph is measured through
:class:`~optimum_subnet.runtime.generator.ORTGenerator`: fixed buffers, IO binding, each decode step a
CUDA-graph replay on CUDA; a torch export (the slower path) through Optimum's step-by-step forward,
IO binding on CUDA, GroupQueryAttention where the export has it), ``pytorch``
(the model in eager PyTorch with SDPA attention, what a user would otherwise run) and, on request,
``pytorch-static`` (:class:`~optimum_subnet.runtime.static_decoding.GreedyStaticDecoder`: a static KV cache, each
decode step replayed from a CUDA graph on CUDA). Timings are
synchronized, follow warm-up runs, and are medians of ``repeats`` runs. Ratios (subnet vs dense)
come from the same run, never from separate ones.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optimum_subnet.core.environment import environment
from optimum_subnet.core.errors import SubnetError

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "pytorch", "pytorch-static")
DEFAULT_BACKENDS = ("onnxruntime", "pytorch")
RESULTS_NAME = "benchmark"


@dataclass
class BenchmarkConfig:
    provider: str = "cpu"  # cpu | cuda
    backends: list[str] = field(default_factory=lambda: list(DEFAULT_BACKENDS))
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    prompt_lengths: list[int] = field(default_factory=lambda: [128, 2048])
    new_tokens: int = 128
    dtype: str = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    warmup: int = 2
    repeats: int = 5
    fuse_attention: bool | None = None  # exporting on the fly with builder="torch": None = on CUDA only
    builder: str | None = None  # exporting on the fly: direct | torch | None (direct where supported)

    def validate(self) -> "BenchmarkConfig":
        checks = [
            (self.provider in ("cpu", "cuda"), f"provider must be cpu or cuda, got {self.provider!r}"),
            (bool(self.backends) and all(b in BACKENDS for b in self.backends),
             f"backends must be among {', '.join(BACKENDS)}, got {self.backends}"),
            (bool(self.batch_sizes) and all(isinstance(b, int) and b >= 1 for b in self.batch_sizes),
             f"batch sizes must be positive integers, got {self.batch_sizes}"),
            (bool(self.prompt_lengths) and all(isinstance(p, int) and p >= 1 for p in self.prompt_lengths),
             f"prompt lengths must be positive integers, got {self.prompt_lengths}"),
            (self.new_tokens >= 1, f"new tokens must be >= 1, got {self.new_tokens}"),
            (self.dtype in ("auto", "fp32", "fp16"), f"dtype must be auto, fp32 or fp16, got {self.dtype!r}"),
            (self.warmup >= 0 and self.repeats >= 1, "warmup must be >= 0 and repeats >= 1"),
            (self.builder in (None, "direct", "torch"), f"builder must be direct or torch, got {self.builder!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SubnetError(message)
        if self.resolved_dtype() == "fp16" and self.provider == "cpu":
            raise SubnetError('fp16 runs on CUDA only; use dtype="fp32" with provider="cpu"')
        return self

    def resolved_dtype(self) -> str:
        return ("fp16" if self.provider == "cuda" else "fp32") if self.dtype == "auto" else self.dtype

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_pretrained(self, folder) -> Path:
        from optimum_subnet.core.files import write_json

        path = Path(folder) / "benchmark_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_pretrained(cls, path) -> "BenchmarkConfig":
        from optimum_subnet.core.files import read_json

        path = Path(path)
        data = read_json(path / "benchmark_config.json" if path.is_dir() else path)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise SubnetError(f"unknown benchmark option(s): {', '.join(unknown)}")
        return cls(**data).validate()


def is_onnx_folder(path) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.glob("*.onnx"))


def weight_bytes(path, dtype: str) -> int:
    """Bytes of the model's parameters in ``dtype`` (a tied LM head counted once, as in memory)."""
    from optimum_subnet.loading import load_config

    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.families import get_adapter, subnet_model_types

    config = load_config(str(path))
    itemsize = 2 if dtype == "fp16" else 4
    if getattr(config, "model_type", None) in subnet_model_types():
        spec = SubnetSpec.load(path) if (Path(path) / "subnet_config.json").is_file() else None
        if spec is not None:
            return spec.params() * itemsize
    adapter = get_adapter(config)
    return adapter.shape(config).dense_params() * itemsize


# ------------------------------------------------------------------------------------ timing
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _measure(model, device, vocab: int, batch: int, prompt: int, config: BenchmarkConfig) -> dict[str, Any]:
    """Prefill and decode timings of a loaded model (PyTorch or ORT: both take ``model(ids, ...)``)."""
    import torch

    generator = torch.Generator().manual_seed(batch * 100_003 + prompt)
    ids = torch.randint(3, vocab, (batch, prompt), generator=generator).to(device)
    mask = torch.ones((batch, prompt), dtype=torch.long, device=device)

    @torch.no_grad()
    def prefill():
        return model(input_ids=ids, attention_mask=mask, use_cache=True)

    @torch.no_grad()
    def decode():
        out = prefill_out
        past, token, attention = out.past_key_values, out.logits[:, -1:].argmax(-1), mask
        for _ in range(config.new_tokens):
            attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=1)
            step = model(input_ids=token, attention_mask=attention, past_key_values=past, use_cache=True)
            past, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
        return token

    prefill_times = _time(prefill, device, config.warmup, config.repeats)
    prefill_out = prefill()
    # decode timings include nothing of the prefill: the cache it filled is reused by every repeat
    decode_times = _time(decode, device, min(config.warmup, 1), config.repeats)
    decode_s = statistics.median(decode_times)
    return {"prefill_ms": 1000 * statistics.median(prefill_times),
            "decode_ms_per_step": 1000 * decode_s / config.new_tokens,
            "decode_tokens_per_s": batch * config.new_tokens / decode_s,
            "prefill_ms_all": [1000 * t for t in prefill_times], "decode_s_all": decode_times}


def _measure_generator(model, device, vocab: int, batch: int, prompt: int, config: BenchmarkConfig) -> dict[str, Any]:
    """The same measurements through :class:`ORTGenerator` on a directly built graph (its synchronized
    timers: the prefill with the first token, then the decode steps; on CUDA the steps after the first
    two are CUDA-graph replays: ONNX Runtime runs one step before capturing, then captures one)."""
    import torch

    generator_ = torch.Generator().manual_seed(batch * 100_003 + prompt)
    ids = torch.randint(3, vocab, (batch, prompt), generator=generator_).to(device)
    steps = config.new_tokens + 1  # the first token comes from the prefill
    generator = model.generator(batch, prompt + steps)
    timings = _timed_runs(lambda: generator.generate(ids, max_new_tokens=steps), generator, batch, config)
    return {**timings, "engine": "ORTGenerator", "cuda_graph": generator.cuda_graph}


def _timed_runs(generate, timed, batch: int, config: BenchmarkConfig) -> dict[str, Any]:
    """Medians over ``config.repeats`` calls of ``generate`` after ``config.warmup`` ones, read from the
    engine's own synchronized timers (``timed.timing``: prefill_s, decode_s, decode_steps)."""
    prefill, per_step = [], []
    for run in range(config.warmup + config.repeats):
        generate()
        if run >= config.warmup:
            prefill.append(timed.timing["prefill_s"])
            per_step.append(timed.timing["decode_s"] / timed.timing["decode_steps"])
    step = statistics.median(per_step)
    return {"prefill_ms": 1000 * statistics.median(prefill), "decode_ms_per_step": 1000 * step,
            "decode_tokens_per_s": batch / step, "prefill_ms_all": [1000 * t for t in prefill],
            "decode_s_all": [s * config.new_tokens for s in per_step]}


def _measure_static(model, device, vocab: int, batch: int, prompt: int, config: BenchmarkConfig) -> dict[str, Any]:
    """The same measurements through :class:`GreedyStaticDecoder` (its own synchronized timers: prefill,
    and the decode steps after the warm-up ones, i.e. the CUDA-graph replays on CUDA)."""
    import torch

    from optimum_subnet.runtime.static_decoding import DEFAULT_WARMUP_STEPS, GreedyStaticDecoder

    generator = torch.Generator().manual_seed(batch * 100_003 + prompt)
    ids = torch.randint(3, vocab, (batch, prompt), generator=generator).to(device)
    # + the token from the prefill and the untimed warm-up steps: config.new_tokens timed steps on CUDA
    new_tokens = config.new_tokens + 1 + DEFAULT_WARMUP_STEPS
    decoder = GreedyStaticDecoder(model, prompt + new_tokens)
    timings = _timed_runs(lambda: decoder.generate(ids, new_tokens), decoder, batch, config)
    return {**timings, "cuda_graph": decoder.graph is not None}


class _Memory:
    """Peak memory of one model's runs (device peak on CUDA, resident set on CPU)."""

    def __init__(self, device, backend: str):
        self.device, self.backend = device, backend

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            self.baseline_used = total - free
            self.peak_used = self.baseline_used
        return self

    def sample(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            self.peak_used = max(self.peak_used, total - free)

    def result(self) -> dict[str, Any]:
        import torch

        if self.device.type == "cuda":
            if self.backend.startswith("pytorch"):
                return {"peak_memory_bytes": torch.cuda.max_memory_allocated(self.device),
                        "memory_source": "torch.cuda.max_memory_allocated"}
            return {"peak_memory_bytes": self.peak_used - self.baseline_used,
                    "memory_source": "device used memory (cudaMemGetInfo), sampled after each run"}
        import psutil

        return {"peak_memory_bytes": psutil.Process().memory_info().rss, "memory_source": "process RSS (CPU)"}

    def __exit__(self, *exc):
        return False


def _load_pytorch(path, device, dtype: str):
    import torch

    from optimum_subnet.loading import load_model

    model, _ = load_model(str(path), dtype="float16" if dtype == "fp16" else "float32")
    model.config._attn_implementation = "sdpa"
    return model.to(device).eval()


def _load_onnxruntime(path, provider: str, dtype: str, fuse: bool | None, workdir: Path, builder: str | None = None):
    from optimum_subnet.runtime.loading import load_ort_model

    if not is_onnx_folder(path):  # a model folder: export it first (validated), into the work folder
        from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx

        target = workdir / (Path(path).name + "-onnx")
        fuse = provider == "cuda" if fuse is None else fuse
        logger.info("Exporting %s to ONNX (%s, %s attention) for the benchmark", path, dtype,
                    "fused" if fuse else "unfused")
        export_onnx(str(path), target, OnnxExportConfig(dtype=dtype, device=provider, fuse_attention=fuse,
                                                        builder=builder))
        path = target
    return load_ort_model(Path(path), provider, use_io_binding=provider == "cuda")


def benchmark(model: str | os.PathLike, baseline: str | os.PathLike | None = None,
              config: BenchmarkConfig | None = None, progress=None) -> dict[str, Any]:
    """Measure ``model`` (and ``baseline``) with every configured backend; see the module docstring."""
    import torch

    config = (config or BenchmarkConfig()).validate()
    if config.provider == "cuda" and not torch.cuda.is_available():
        raise SubnetError('provider="cuda" needs a CUDA GPU; none is visible (use provider="cpu")')
    dtype = config.resolved_dtype()
    device = torch.device("cuda" if config.provider == "cuda" else "cpu")
    models = {"subnet": _model_path(model)}
    if baseline is not None:
        models = {"dense": _model_path(baseline), **models}
    for name, path in models.items():
        if not path.exists():
            raise SubnetError(f"{name} model folder {path} does not exist")
        _check_folder(path)
    results: dict[str, Any] = {"config": config.to_dict(), "dtype": dtype, "runs": [], "models": {},
                               "environment": environment(device)}
    with tempfile.TemporaryDirectory(prefix="subnet-benchmark-") as tmp:
        for name, path in models.items():
            source = _source_folder(path)
            results["models"][name] = {"path": str(path), "weight_bytes": weight_bytes(source, dtype) if source else None}
            for backend in config.backends:
                if backend.startswith("pytorch") and source is None:
                    logger.warning("%s is an ONNX folder without its model weights: no PyTorch reference", path)
                    continue
                with _Memory(device, backend) as memory:
                    loaded = (_load_pytorch(source, device, dtype) if backend.startswith("pytorch")
                              else _load_onnxruntime(path, config.provider, dtype, config.fuse_attention, Path(tmp),
                                                     config.builder))
                    measure = _measure_static if backend == "pytorch-static" else _measure
                    if getattr(loaded, "direct_graph", None) is not None:
                        measure = _measure_generator
                    results["models"][name].setdefault("engines", {})[backend] = (
                        "ORTGenerator (direct graph)" if measure is _measure_generator else
                        "transformers loop over Optimum forward (torch export: slower path)"
                        if backend == "onnxruntime" else backend)
                    vocab = loaded.config.vocab_size
                    for batch in config.batch_sizes:
                        for prompt in config.prompt_lengths:
                            timing = measure(loaded, device, vocab, batch, prompt, config)
                            memory.sample()
                            results["runs"].append({"model": name, "backend": backend, "batch": batch,
                                                    "prompt": prompt, **timing})
                            if progress is not None:
                                progress.update(1)
                    results["models"][name][backend] = memory.result()
                del loaded
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    results["ratios"] = ratios(results)
    return results


def _model_path(name_or_path) -> Path:
    """A folder, or a built-in model alias (``smollm2-135m``, ``gemma3-270m``: its cached folder)."""
    from optimum_subnet.loading import BUILTIN_MODELS, resolve_model_path

    return Path(resolve_model_path(str(name_or_path))) if str(name_or_path) in BUILTIN_MODELS else Path(name_or_path)


def _check_folder(path: Path) -> None:
    """Refuse an unreadable model or ONNX folder before anything is measured (not after the first model)."""
    from optimum_subnet.loading import check_model_files, load_config

    if is_onnx_folder(path):
        from optimum_subnet.runtime.loading import check_onnx_file, onnx_file_name

        check_onnx_file(path / onnx_file_name(path))
    else:
        load_config(str(path))
        check_model_files(str(path), path)


def _source_folder(path: Path) -> Path | None:
    """The model folder holding weights for ``path``: itself, or the folder an ONNX export names."""
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    return None


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Subnet vs dense per (backend, batch, prompt), and the subnet in ORT vs the dense model in PyTorch."""
    runs = {(r["model"], r["backend"], r["batch"], r["prompt"]): r for r in results["runs"]}
    models = results["models"]
    if "dense" not in models:
        return []
    ideal = None
    if models["dense"].get("weight_bytes") and models["subnet"].get("weight_bytes"):
        ideal = models["dense"]["weight_bytes"] / models["subnet"]["weight_bytes"]
    out = []
    for (model, backend, batch, prompt), sub in runs.items():
        if model != "subnet":
            continue
        for reference_backend in dict.fromkeys([backend, "pytorch"]):
            dense = runs.get(("dense", reference_backend, batch, prompt))
            if dense is None:
                continue
            entry = {"backend": backend, "reference_backend": reference_backend, "batch": batch, "prompt": prompt,
                     "prefill_speedup": dense["prefill_ms"] / sub["prefill_ms"],
                     "decode_speedup": sub["decode_tokens_per_s"] / dense["decode_tokens_per_s"],
                     "ideal_decode_speedup": ideal}
            if ideal:
                entry["decode_fraction_of_ideal"] = entry["decode_speedup"] / ideal
            out.append(entry)
    return out


# ---------------------------------------------------------------------------------- outputs
def write_results(results: dict[str, Any], output: str | os.PathLike) -> Path:
    """``output`` (a folder): benchmark.json, benchmark.md, benchmark.png, written atomically per file."""
    from optimum_subnet.core.files import write_json

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{RESULTS_NAME}.json", results)
    tmp = folder / f".{RESULTS_NAME}.md.tmp"
    tmp.write_text(markdown(results), encoding="utf-8")
    os.replace(tmp, folder / f"{RESULTS_NAME}.md")
    plot(results, folder / f"{RESULTS_NAME}.png")
    return folder


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"# Benchmark ({env.get('gpu', env['device'])}, {results['dtype']})", "",
             "Medians of synchronized runs after warm-up; ratios from the same run.", "",
             "| model | backend | batch | prompt | prefill ms | decode tok/s | decode ms/step |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        lines.append(f"| {r['model']} | {r['backend']} | {r['batch']} | {r['prompt']} | {r['prefill_ms']:.2f} | "
                     f"{r['decode_tokens_per_s']:.1f} | {r['decode_ms_per_step']:.2f} |")
    lines += ["", "| model | weights | " + " | ".join(f"peak memory ({b})" for b in results["config"]["backends"])
              + " |", "|---|---:|" + "---:|" * len(results["config"]["backends"])]
    for name, info in results["models"].items():
        weights = f"{info['weight_bytes'] / 2**20:.1f} MiB" if info.get("weight_bytes") else "-"
        cells = [f"{info[b]['peak_memory_bytes'] / 2**20:.1f} MiB" if b in info else "-"
                 for b in results["config"]["backends"]]
        lines.append(f"| {name} | {weights} | " + " | ".join(cells) + " |")
    if results["ratios"]:
        lines += ["", "| subnet backend | vs dense in | batch | prompt | prefill speedup | decode speedup | "
                      "ideal (weight bytes) | fraction of ideal |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in results["ratios"]:
            ideal = f"{r['ideal_decode_speedup']:.2f}x" if r.get("ideal_decode_speedup") else "-"
            fraction = f"{r['decode_fraction_of_ideal']:.2f}" if "decode_fraction_of_ideal" in r else "-"
            lines.append(f"| {r['backend']} | {r['reference_backend']} | {r['batch']} | {r['prompt']} | "
                         f"{r['prefill_speedup']:.2f}x | {r['decode_speedup']:.2f}x | {ideal} | {fraction} |")
    return "\n".join(lines) + "\n"


def summary(results: dict[str, Any]) -> str:
    """The short table printed last: decode tok/s per (model, backend) at each batch/prompt."""
    lines = [f"{'model':<8} {'backend':<12} {'batch':>5} {'prompt':>6} {'prefill ms':>11} {'decode tok/s':>13}"]
    for r in results["runs"]:
        lines.append(f"{r['model']:<8} {r['backend']:<12} {r['batch']:>5} {r['prompt']:>6} {r['prefill_ms']:>11.2f} "
                     f"{r['decode_tokens_per_s']:>13.1f}")
    for r in results["ratios"]:
        if r["backend"] == r["reference_backend"]:
            lines.append(f"subnet/dense ({r['backend']}, batch {r['batch']}, prompt {r['prompt']}): decode "
                         f"{r['decode_speedup']:.2f}x, prefill {r['prefill_speedup']:.2f}x"
                         + (f" (ideal {r['ideal_decode_speedup']:.2f}x)" if r.get("ideal_decode_speedup") else ""))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    keys = sorted({(r["batch"], r["prompt"]) for r in runs})
    series = sorted({(r["model"], r["backend"]) for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(1, len(series))
    for i, (model, backend) in enumerate(series):
        values = {(r["batch"], r["prompt"]): r for r in runs if r["model"] == model and r["backend"] == backend}
        xs = [k + i * width for k in range(len(keys))]
        axes[0].bar(xs, [values[k]["decode_tokens_per_s"] if k in values else 0 for k in keys], width,
                    label=f"{model} ({backend})")
        axes[1].bar(xs, [values[k]["prefill_ms"] if k in values else 0 for k in keys], width)
    for ax, title in zip(axes, ("decode tokens/s (higher is better)", "prefill ms (lower is better)")):
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
        ax.set_xticklabels([f"b{b} p{p}" for b, p in keys])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_results(folder) -> dict[str, Any]:
    return json.loads((Path(folder) / f"{RESULTS_NAME}.json").read_text())
