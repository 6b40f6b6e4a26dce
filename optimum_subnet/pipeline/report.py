"""Human-readable views of a run's ``report.json``: Markdown summary and a search-progress plot."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

#: The report's wall-clock fields (and the memory found free): they differ between two runs of the same
#: search (e.g. a resumed run and an uninterrupted one). Every other field is reproducible from the seed,
#: the inputs and the library versions on the same hardware. ``timings`` also records ``resumed_from_generation``.
TIMING_FIELDS = ("timings", "search.seconds", "search.seconds_per_evaluation", "search.history[].seconds",
                 "faithfulness.seconds", "faithfulness.reference_seconds",
                 "reformation.seconds", "memory.budget_bytes", "search.distributed.ranks[].seconds",
                 # counted by this process only (a resumed run builds fewer subnets)
                 "search.fitness.subnets_built", "search.fitness.subnets_reused")


def without_timings(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` without :data:`TIMING_FIELDS` (what two reproducible runs share)."""
    report = copy.deepcopy(report)
    for field in TIMING_FIELDS:
        parts = field.split(".")
        targets = [report]
        for part in parts[:-1]:
            if part.endswith("[]"):
                targets = [item for t in targets for item in t.get(part[:-2], [])]
            else:
                targets = [t[part] for t in targets if isinstance(t.get(part), dict)]
        for target in targets:
            target.pop(parts[-1], None)
    return report


def _ppl(entry: dict[str, Any]) -> str:
    return ", ".join(f"{v:.2f}" for v in entry.get("ppl", {}).values()) or "-"


def report_markdown(report: dict[str, Any]) -> str:
    dense = report["dense"]["params"]
    method = report.get("method", "ours")
    reformed = (report.get("reformation") or {}).get("method", "none") != "none"
    rows = [
        ("dense", report["dense"]),
        ("initial (importance, uniform)", report.get("initial", {})),
        ("initial (importance, global)", report.get("initial_global", {})),
        ("searched (before reformation)" if method == "ours" else f"pruned ({method})", report.get("searched", {})),
        ("final subnet (reformed)" if reformed else "final subnet", report.get("subnet", {})),
    ]
    ev = report.get("evaluation", {})
    lines = [
        f"# Subnet of {report.get('model')} at target ratio {report['target_ratio']}",
        "",
        f"Perplexity on {ev.get('description', ev.get('dataset', '?'))}, {ev.get('windows', '?')} windows of "
        f"{ev.get('seq_len', '?')} tokens (held-out articles).",
        "",
        "| model | params | inheriting ratio | perplexity |",
        "|---|---:|---:|---:|",
    ]
    for name, entry in rows:
        if entry:
            lines.append(f"| {name} | {entry['params']:,} | {entry['params'] / dense:.4f} | {_ppl(entry)} |")
    init = report.get("initialization")
    if init:
        lines += ["", f"Initialization: {init['method']} ({init['importance']} importance); the search started from "
                      f"the {init['chosen']} subnet (calibration perplexity "
                      + ", ".join(f"{k} {v:.2f}" for k, v in init["fitness"].items()) + ")."]
    search = report.get("search")
    if search:
        lines += [
            "",
            f"Search: {search['generations']} generations, {search['evaluations']} fitness evaluations in "
            f"{search['seconds']:.0f} s ({search['seconds_per_evaluation']:.2f} s per evaluation); fitness "
            f"{search['initial_fitness']:.2f} -> {search['best_fitness']:.2f} (calibration perplexity).",
        ]
    baseline = report.get("baseline")
    if baseline:
        lines += [
            "",
            f"Method: {baseline['method']} ({baseline['reference']}); {baseline['structure']} structure, "
            f"attention pruned by {baseline['attention_unit']}, statistics: {baseline['statistics']}, bias "
            f"compensation: {'yes' if baseline['bias_compensation'] else 'no'}; {baseline['seconds']:.0f} s.",
        ]
    ref = report.get("reformation")
    if ref and ref.get("method") != "none" and ref.get("mean_attention_error_before") is not None:
        lines.append(
            f"Reformation: {ref['method']} in {ref['seconds']:.0f} s; mean relative output error of W_O "
            f"{ref['mean_attention_error_before']:.3f} -> {ref['mean_attention_error_after']:.3f}, of W_down "
            f"{ref['mean_mlp_error_before']:.3f} -> {ref['mean_mlp_error_after']:.3f}."
        )
    faith = report.get("faithfulness")
    if faith:
        lines.append(faithfulness_markdown(faith))
    constraint = (search or {}).get("faithfulness_constraint")
    if constraint:
        lines.append(f"Faithfulness constraint: {constraint['rejected']} of {constraint['evaluated']} candidates "
                     f"rejected (mean Spearman < {constraint['min_spearman']} on {constraint['prompts']} prompts).")
    sub = report.get("subnet")
    if sub:
        heads = f"KV heads: {sub['kv_heads']}; " if "kv_heads" in sub else ""
        lines += ["", f"Layers kept: {sub['num_layers']}; {heads}head sizes: {sub['head_dims']}; "
                      f"MLP widths: {sub['intermediate_sizes']}."]
    return "\n".join(lines) + "\n"


def faithfulness_markdown(faith: dict[str, Any]) -> str:
    """One line: how closely the subnet's AtMan relevance maps follow the dense model's."""

    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    atman = faith.get("atman", {})
    return (f"Faithfulness to the dense model (AtMan relevance, {faith['prompts']} {faith.get('dataset', '')} prompts, "
            f"{atman.get('granularity', 'token')} level, f = {atman.get('suppression_factor', '?')}, "
            f"{atman.get('mode', '?')}): Spearman {fmt(faith['spearman'])}, top-{faith['k']} overlap "
            f"{fmt(faith['top_k_overlap'])} (1.0: same evidence).")


def plot_search(report: dict[str, Any], path: Path) -> None:
    """Best calibration perplexity per generation, with the initial subnet's as a reference line."""
    search = report.get("search")
    if not search or not search.get("best_fitness_per_generation"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = search["best_fitness_per_generation"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(range(1, len(best) + 1), best, marker="o", label="best candidate")
    ax.axhline(search["initial_fitness"], color="gray", linestyle="--", label="initial (importance, uniform)")
    ax.set_xlabel("generation")
    ax.set_ylabel("calibration perplexity")
    ax.set_title(f"Search at target ratio {report['target_ratio']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
