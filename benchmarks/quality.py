"""Quality side by side: our search + reformation against structured-pruning baselines.

    python benchmarks/quality.py                                  # the committed table (hours on 2 CPU cores)
    python benchmarks/quality.py --ratios 0.8 --methods ours flap --limit 20 --output /tmp/q   # a quick look

Every method runs as a strategy of the same pass (``SubnetConfig.method``), on the same model,
calibration data and budget, with the same parameter accounting. Each subnet is then measured the
same way:

* perplexity on the held-out side of the built-in Wikipedia extract at 512- and 128-token windows and
  on the LAMBADA passages (512-token windows), the same evenly spaced windows for every model;
* zero-shot accuracy on the paper's seven tasks through lm-eval (``optimum_subnet.evaluation.zeroshot``) at the
  ``--zero-shot-ratios``, ``--limit`` documents per task.

Writes ``<output>.json`` (every entry, updated after each one: a cut run keeps what it measured and
``--resume`` continues it), ``<output>.md`` (tables, the issue's bar checked) and ``<output>.png``
(perplexity vs inheriting ratio, one line per method).

Method names: ``ours``, ``flap``, ``wanda-sp``, ``magnitude``, ``random``; ``NAME@pair`` prunes a
baseline's attention by RoPE channel pairs inside heads (our search space) instead of whole KV heads;
``ours`` searches the family's default space (``search.attention_pruning = "auto"``), ``ours@pair`` prunes
attention inside heads, ``ours@mlp`` leaves it whole (MLP widths and depth only) and ``ours@layer``
shares one attention channel mask across a layer's KV heads (``search.attention_mask_sharing = "layer"``)
instead of one per KV head: on ONNX Runtime CUDA that keeps rotary inside GroupQueryAttention, so it
decodes faster (``benchmarks/results/ort_decode_h100.md``); this variant measures what it costs in quality.

``--checkpoints DIR`` keeps each search's checkpoints (``DIR/<method>_<ratio>.partial``) so that a run
cut in the middle of a search continues it with ``--resume`` from its last generation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/config_overrides.py
from config_overrides import parse_overrides  # noqa: E402

LOG = logging.getLogger("quality")
# ``ours@VARIANT``: our search with these config overrides
OURS_VARIANTS = {
    "mlp": {"search__attention_pruning": "none"},  # attention left whole: MLP widths and depth only
    "pair": {"search__attention_pruning": "in_head"},  # attention pruned by RoPE pairs inside heads
    "layer": {"search__attention_mask_sharing": "layer"},  # one attention channel mask per layer, not per KV head
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+",
                        default=["ours", "flap", "flap@pair", "wanda-sp", "wanda-sp@pair", "magnitude", "random"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--preset", default="fast", choices=["auto", "fast", "paper"])
    parser.add_argument("--ratio-of", default="all", choices=["all", "blocks"],
                        help="the ratios count all parameters (the paper) or the decoder blocks (e.g. Gemma3-270M, "
                             "whose embeddings are 63%% of it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--windows-512", type=int, default=128, help="held-out windows of 512 tokens")
    parser.add_argument("--windows-128", type=int, default=256, help="held-out windows of 128 tokens")
    parser.add_argument("--lambada-windows", type=int, default=64, help="LAMBADA windows of 512 tokens")
    parser.add_argument("--tasks", default="all", help="zero-shot tasks ('all', a comma list, or 'none')")
    parser.add_argument("--limit", type=int, default=None, help="zero-shot documents per task (default: all)")
    parser.add_argument("--zero-shot-ratios", type=float, nargs="*", default=[0.8, 0.5])
    parser.add_argument("--zero-shot-methods", nargs="*", default=None,
                        help="methods that get the zero-shot evaluation (default: every method)")
    parser.add_argument("--zero-shot-batch-size", type=int, default=16)
    parser.add_argument("--dense-zero-shot", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the dense model's zero-shot accuracy too (--no-dense-zero-shot: in parallel "
                             "runs that --merge joins, only the first one listed needs it)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every method, e.g. search__generations=16")
    parser.add_argument("--resume", action="store_true", help="keep the entries already in <output>.json")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "quality"))
    parser.add_argument("--checkpoints", help="folder for the searches' checkpoints (resumed with --resume)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only merge the results of runs with the same settings (e.g. --ratios split over "
                             "several processes) into --output, and exit")
    parser.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW",
                        help="with --merge: entries of method OLD are listed as NEW (recorded as run_as: OLD), "
                             "e.g. for runs made before a method's name changed meaning")
    parser.add_argument("--note", action="append", default=[],
                        help="with --merge: a note for the Markdown (repeatable; kept in the JSON)")
    args = parser.parse_args(argv)
    if args.merge:
        renames = dict(item.split("=", 1) for item in args.rename)
        write_outputs(merge([json.loads(Path(p).read_text()) for p in args.merge], renames, args.note),
                      Path(args.output))
        sys.stdout.write(Path(args.output).with_suffix(".md").read_text())
        return 0

    for name in args.methods:
        method_overrides(name)  # an unknown variant fails here, not after the dense model's measurement
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from optimum_subnet import data as data_lib
    from optimum_subnet.evaluation.perplexity import negative_log_likelihood
    from optimum_subnet.loading import resolve_device
    from optimum_subnet.pipeline.checkpoint import RunDirectory

    output = Path(args.output)
    overrides = parse_overrides(args.set)
    settings = {"model": args.model, "preset": args.preset, "ratio_of": args.ratio_of, "seed": args.seed,
                "windows_512": args.windows_512,
                "windows_128": args.windows_128, "lambada_windows": args.lambada_windows, "tasks": args.tasks,
                "limit": args.limit, "overrides": overrides}
    entries = []
    if args.resume and output.with_suffix(".json").exists():
        previous = json.loads(output.with_suffix(".json").read_text())
        if previous.get("settings") == settings:
            entries = previous["entries"]
            LOG.info("Resuming: %d entries kept from %s", len(entries), output.with_suffix(".json"))
        else:
            LOG.warning("Settings differ from %s: starting over", output.with_suffix(".json"))
    done = {(e["method"], e["target_ratio"]) for e in entries}

    optimizer = SubnetOptimizer.from_pretrained(args.model)
    tokenizer = optimizer.tokenizer
    device = resolve_device(args.device)
    held_out = data_lib.tokenize_stream(data_lib.load_texts("enwiki-extract", "evaluation"), tokenizer)
    lambada = data_lib.tokenize_stream(data_lib.load_texts("lambada", "evaluation"), tokenizer)
    sets = {
        "wiki@512": data_lib.evaluation_windows(held_out, 512, args.windows_512, data_lib.bos_of(tokenizer)),
        "wiki@128": data_lib.evaluation_windows(held_out, 128, args.windows_128, data_lib.bos_of(tokenizer)),
        "lambada@512": data_lib.evaluation_windows(lambada, 512, args.lambada_windows, data_lib.bos_of(tokenizer)),
    }
    tasks = None if args.tasks == "none" else args.tasks
    if tasks:
        from optimum_subnet.evaluation.zeroshot import parse_tasks, task_configs

        tasks = parse_tasks(tasks)
        zero_shot_configs = task_configs(tasks)  # fail on missing data before hours of work

    def measure(model, zero_shot: bool) -> dict:
        model.eval()
        # 512-token logit chunks: a 262K vocabulary (Gemma3) makes 2048 x vocab float logits 2 GB
        result = {"ppl": {}}
        for name, windows in sets.items():
            total, count = negative_log_likelihood(model, windows, 8, token_chunk=512)
            result["ppl"][name] = math.exp(min(total / count, 700.0))
        if zero_shot and tasks:
            from optimum_subnet.evaluation.zeroshot import evaluate_zero_shot

            result["zero_shot"] = evaluate_zero_shot(model, tokenizer, tasks, limit=args.limit,
                                                     batch_size=args.zero_shot_batch_size, configs=zero_shot_configs)
        return result

    def save() -> None:
        write_outputs({"settings": settings, "windows": {k: list(v.shape) for k, v in sets.items()},
                       "entries": entries}, output)

    model = optimizer.model.to(device).eval()
    if ("dense", 1.0) not in done:
        start = time.perf_counter()
        entry = {"method": "dense", "target_ratio": 1.0, "inheriting_ratio": 1.0,
                 "params": sum(p.numel() for p in model.parameters())}
        entry.update(measure(model, zero_shot=args.dense_zero_shot))
        entry["seconds"] = time.perf_counter() - start
        entries.append(entry)
        save()
    for ratio in args.ratios:
        for name in args.methods:
            if (name, ratio) in done:
                continue
            method = name.partition("@")[0]
            extra = {**overrides, **method_overrides(name)}
            config = SubnetConfig.preset(args.preset, ratio, method=method, seed=args.seed, device=args.device,
                                         faithfulness__prompts=0, ratio_of=args.ratio_of, **extra)
            LOG.info("=== %s at %.2f", name, ratio)
            start = time.perf_counter()
            work = None
            if args.checkpoints and method == "ours":
                work = RunDirectory(Path(args.checkpoints) / f"{name}_{ratio}").open(resume=args.resume,
                                                                                       overwrite=not args.resume)
            try:
                result = optimizer.run(config, work=work)
            finally:
                if work is not None:
                    work.close(remove=False)
            report = result["report"]
            entry = {"method": name, "target_ratio": ratio, "inheriting_ratio": report["subnet"]["inheriting_ratio"],
                     "block_ratio": report["subnet"]["block_ratio"], "params": report["subnet"]["params"],
                     "pass_seconds": time.perf_counter() - start,
                     "kv_heads": report["subnet"]["kv_heads"], "head_dims": report["subnet"]["head_dims"],
                     "intermediate_sizes": report["subnet"]["intermediate_sizes"],
                     "num_layers": report["subnet"]["num_layers"]}
            if "search" in report:
                entry["search"] = {k: report["search"][k] for k in ("evaluations", "seconds", "initial_fitness",
                                                                   "best_fitness")}
                entry["before_reformation_ppl"] = report["searched"]["ppl"]
            if "baseline" in report:
                entry["baseline"] = {k: v for k, v in report["baseline"].items()
                                     if k not in ("attention_units", "mlp_widths")}
            zero_shot = (any(abs(ratio - r) < 1e-9 for r in args.zero_shot_ratios)
                         and (args.zero_shot_methods is None or name in args.zero_shot_methods))
            start = time.perf_counter()
            entry.update(measure(result["model"].to(device), zero_shot))
            entry["measure_seconds"] = time.perf_counter() - start
            entries.append(entry)
            del result
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            save()
            if work is not None:
                work.close(remove=True)
    sys.stdout.write(output.with_suffix(".md").read_text())
    return 0


# ---------------------------------------------------------------------------------- outputs
def method_overrides(name: str) -> dict:
    """The config overrides that method ``name`` (``METHOD[@VARIANT]``) runs with."""
    method, _, unit = name.partition("@")
    if method != "ours":
        return {"baseline__attention_unit": unit or "head"}
    if unit and unit not in OURS_VARIANTS:
        raise SystemExit(f"unknown variant of ours: {name} (known: {', '.join('ours@' + v for v in OURS_VARIANTS)})")
    return dict(OURS_VARIANTS.get(unit, {}))


def merge(results: list[dict], renames: dict | None = None, notes=()) -> dict:
    """One result from runs with the same settings: every (method, ratio) once (the first run's entry;
    each run measured the dense model, the same windows give the same value). ``renames``: method names
    listed under another name (the entry keeps the name it ran as in ``run_as``); ``notes`` join the runs' own."""
    renames = renames or {}
    first = results[0]
    for other in results[1:]:
        if other["settings"] != first["settings"] or other["windows"] != first["windows"]:
            raise SystemExit("cannot merge runs with different settings or windows")
    entries, seen = [], set()
    for result in results:
        for entry in result["entries"]:
            if entry["method"] in renames:
                entry = {**entry, "method": renames[entry["method"]], "run_as": entry["method"]}
            key = (entry["method"], entry["target_ratio"])
            if key not in seen:
                seen.add(key)
                entries.append(entry)
    all_notes = list(dict.fromkeys([n for r in results for n in r.get("notes", [])] + list(notes)))
    return {"settings": first["settings"], "windows": first["windows"], "entries": entries,
            **({"notes": all_notes} if all_notes else {})}


def write_outputs(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    plot(results, output.with_suffix(".png"))


def _methods(entries):
    return list(dict.fromkeys(e["method"] for e in entries if e["method"] != "dense"))


def _ratios(entries):
    return sorted({e["target_ratio"] for e in entries if e["method"] != "dense"}, reverse=True)


def _find(entries, method, ratio):
    return next((e for e in entries if e["method"] == method and abs(e["target_ratio"] - ratio) < 1e-9), None)


def markdown(results: dict) -> str:
    entries, settings = results["entries"], results["settings"]
    dense = _find(entries, "dense", 1.0)
    methods, ratios = _methods(entries), _ratios(entries)
    lines = [f"# Quality side by side: {settings['model']}", "",
             f"Every method under the same budget (the ratio counts "
             f"{'the decoder blocks' if settings.get('ratio_of') == 'blocks' else 'all parameters'}), calibration data "
             f"(the built-in Wikipedia extract) and parameter accounting; preset `{settings['preset']}`, seed "
             f"{settings['seed']}. Perplexity windows: {', '.join(f'{k} {v[0]}' for k, v in results['windows'].items())} "
             "(evenly spaced, the same for every model; `wiki` is the held-out side of the Wikipedia extract, a "
             "WikiText-2 substitute, not WikiText-2). `@pair`: attention pruned by RoPE pairs inside heads instead "
             "of whole KV heads (`ours@pair`: our search in that attention space); `ours@mlp`: our search with "
             "attention left whole (MLP widths and depth only); `ours@layer`: our search with one attention "
             "channel mask per layer instead of one per KV head. Baselines run as their papers define them (FLAP: "
             "global standardized structure and bias compensation; the others uniform, no compensation); ours is "
             "search (the family's default attention space) + reformation."
             + (" Settings changed from the preset for every method: "
                + ", ".join(f"`{k}={v}`" for k, v in settings["overrides"].items()) + "." if settings.get("overrides")
                else ""), ""]
    for set_name in (dense or entries[0])["ppl"]:
        lines += [f"## Perplexity, {set_name}", "", "| method | " + " | ".join(f"{r:.1f}" for r in ratios) + " |",
                  "|---|" + "---:|" * len(ratios)]
        if dense:
            lines.append(f"| dense | {dense['ppl'][set_name]:.2f} (all ratios) |" + " |" * (len(ratios) - 1))
        for method in methods:
            cells = []
            for r in ratios:
                e = _find(entries, method, r)
                if e is None:
                    cells.append("-")
                    continue
                best = min((x["ppl"][set_name] for x in entries if x["method"] != "dense"
                            and abs(x["target_ratio"] - r) < 1e-9), default=None)
                value = f"{e['ppl'][set_name]:.2f}"
                cells.append(f"**{value}**" if best is not None and e["ppl"][set_name] == best else value)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Inheriting ratios reached (all parameters): " + "; ".join(
        f"{e['method']}@{e['target_ratio']:.1f}: {e['inheriting_ratio']:.4f}" for e in entries if e["method"] != "dense"),
        ""]
    if settings.get("ratio_of") == "blocks":
        lines += ["Block ratios reached (decoder blocks): " + "; ".join(
            f"{e['method']}@{e['target_ratio']:.1f}: {e['block_ratio']:.4f}" for e in entries if e["method"] != "dense"),
            ""]
    zero = [e for e in entries if "zero_shot" in e]
    if zero:
        tasks = list(zero[0]["zero_shot"]["tasks"])
        metric = zero[0]["zero_shot"]["average_metric"]
        docs = {t: zero[0]["zero_shot"]["tasks"][t]["documents"] for t in tasks}
        lines += ["## Zero-shot accuracy (lm-eval, 0-shot)", "",
                  f"{zero[0]['zero_shot']['harness']}, data {zero[0]['zero_shot']['data']}; documents per task: "
                  + ", ".join(f"{t} {docs[t]}" for t in tasks) + ". Metric: "
                  + ", ".join(f"{t} {metric[t]}" for t in tasks) + ".", "",
                  "| model | ratio | " + " | ".join(tasks) + " | average |", "|---|---:|" + "---:|" * (len(tasks) + 1)]
        for e in zero:
            z = e["zero_shot"]
            lines.append(f"| {e['method']} | {e['target_ratio']:.1f} | "
                         + " | ".join(_percent(z["tasks"][t][metric[t]], z["tasks"][t].get(f"{metric[t]}_stderr"))
                                      for t in tasks)
                         + f" | {_percent(z['average'], z.get('average_stderr'), 2)} |")
        if any(e["zero_shot"].get("average_stderr") is not None for e in zero):
            lines += ["", "± one standard error over the documents (sample standard deviation / sqrt(n)); the "
                      "average's is sqrt(sum of the tasks' squared errors) / tasks."]
        lines.append("")
    lines += bar_check(entries)
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"* {note}" for note in results["notes"]] + [""]
    return "\n".join(lines) + "\n"


def _percent(value: float, stderr: float | None, digits: int = 1) -> str:
    """An accuracy in percent, with its standard error where it was measured."""
    return f"{100 * value:.{digits}f}" + (f" ± {100 * stderr:.{digits}f}" if stderr is not None else "")


def bar_check(entries) -> list[str]:
    """The issue's bar: ours lowest perplexity at every ratio (wiki@512), and at 0.5 its increase over
    dense at most 0.7x FLAP's."""
    dense = _find(entries, "dense", 1.0)
    if dense is None or not any(e["method"] == "ours" for e in entries):
        return []
    lines = ["## The bar", "", "| ratio | ours | best baseline | ours lowest? | ours - dense | FLAP - dense | ratio |",
             "|---:|---:|---|---|---:|---:|---:|"]
    base = dense["ppl"]["wiki@512"]
    for r in _ratios(entries):
        ours = _find(entries, "ours", r)
        others = [e for e in entries if e["method"] != "dense" and not e["method"].startswith("ours")
                  and abs(e["target_ratio"] - r) < 1e-9]
        if ours is None or not others:
            lines.append(f"| {r:.1f} | {ours['ppl']['wiki@512']:.2f} | not measured | - | - | - | - |" if ours
                         else f"| {r:.1f} | not measured | - | - | - | - | - |")
            continue
        best = min(others, key=lambda e: e["ppl"]["wiki@512"])
        flaps = [e for e in others if e["method"].startswith("flap")]
        flap = min(flaps, key=lambda e: e["ppl"]["wiki@512"]) if flaps else None
        gap = ours["ppl"]["wiki@512"] - base
        flap_gap = flap["ppl"]["wiki@512"] - base if flap else math.nan
        lines.append(f"| {r:.1f} | {ours['ppl']['wiki@512']:.2f} | {best['method']} {best['ppl']['wiki@512']:.2f} | "
                     f"{'yes' if ours['ppl']['wiki@512'] <= best['ppl']['wiki@512'] else 'NO'} | {gap:.2f} | "
                     f"{flap_gap:.2f} ({flap['method'] if flap else '-'}) | {gap / flap_gap:.2f} |")
    lines += ["", "Bar: ours lowest at every ratio, and at 0.5 (ours - dense) / (FLAP - dense) <= 0.70 "
                  "(the paper's LLaMA-7B gap). FLAP here is its better variant (heads or pairs).", ""]
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["entries"]
    blocks = results["settings"].get("ratio_of") == "blocks"
    key = "block_ratio" if blocks else "inheriting_ratio"
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for method in _methods(entries):
        points = sorted((e[key], e["ppl"]["wiki@512"]) for e in entries if e["method"] == method)
        style = "D-" if method == "ours" else "o--"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=method,
                linewidth=2.2 if method == "ours" else 1.2)
    dense = _find(entries, "dense", 1.0)
    if dense:
        ax.axhline(dense["ppl"]["wiki@512"], color="black", linewidth=0.8, label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("block ratio (decoder blocks)" if blocks else "inheriting ratio (all parameters)")
    ax.set_ylabel("held-out perplexity, 512-token windows (log)")
    ax.set_title(f"{results['settings']['model']}: methods side by side")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
