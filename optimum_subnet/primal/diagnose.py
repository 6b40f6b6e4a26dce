"""Training-free diagnosis: how low-rank is each layer's and head's attention on calibration data?

For every layer and head, the softmax attention matrices of a few calibration windows are
decomposed (:func:`~optimum_subnet.algorithms.primal.attention_spectrum`): the normalized cumulative
singular values (the curves the paper plots to motivate Primal-Attention, Fig. 1) and the ranks that
reach 90 / 95 / 99% of the energy. Layers whose heads need few directions are the candidates for a
primal layer (the authors find them in the deep layers). Written as ``spectrum.json``,
``spectrum.md`` and ``spectrum.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from optimum_subnet.algorithms.primal import attention_spectrum

logger = logging.getLogger(__name__)


@torch.no_grad()
def attention_spectra(model, windows: torch.Tensor, thresholds, progress=None) -> dict:
    """Per layer and head: the mean (over windows) normalized cumulative singular values and the mean
    energy ranks at ``thresholds``. Attention probabilities come from the eager implementation."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = "eager"  # the only implementation that returns the matrices
    curves: dict[int, torch.Tensor] = {}
    ranks: dict[int, dict[float, torch.Tensor]] = {}
    try:
        device = next(model.parameters()).device
        for window in windows:
            out = model(input_ids=window[None].to(device), output_attentions=True, use_cache=False)
            for index, attention in enumerate(out.attentions):
                if attention is None:  # a layer without an attention matrix (a primal layer)
                    continue
                curve, rank = attention_spectrum(attention[0], thresholds)
                curves[index] = curves.get(index, 0) + curve / len(windows)
                ranks.setdefault(index, {})
                for t in thresholds:
                    ranks[index][t] = ranks[index].get(t, 0) + rank[t].double() / len(windows)
            if progress is not None:
                progress.update(1)
    finally:
        config._attn_implementation = previous
    layers = []
    for index in sorted(curves):
        heads = [{"head": h, "energy_ranks": {f"{t:g}": round(float(ranks[index][t][h]), 2) for t in thresholds},
                  "cumulative_singular_values": [round(v, 4) for v in curves[index][h].tolist()]}
                 for h in range(curves[index].shape[0])]
        layers.append({"layer": index,
                       "mean_energy_ranks": {f"{t:g}": round(float(ranks[index][t].mean()), 2) for t in thresholds},
                       "heads": heads})
    return {"layers": layers}


def candidates(report: dict, threshold: float) -> list[int]:
    """Layers ordered from the lowest-rank attention (mean rank at ``threshold``) to the highest."""
    key = f"{threshold:g}"
    return [entry["layer"] for entry in sorted(report["layers"], key=lambda e: e["mean_energy_ranks"][key])]


def write_diagnosis(report: dict, folder: Path) -> None:
    # compact: one curve per head (layers x heads x window length numbers) would be megabytes indented
    (folder / "spectrum.json").write_text(json.dumps(report, separators=(",", ":")) + "\n", encoding="utf-8")
    (folder / "spectrum.md").write_text(render_markdown(report), encoding="utf-8")
    try:
        plot_spectrum(report, folder / "spectrum.png")
    except ImportError:  # matplotlib is optional
        logger.warning("matplotlib is not installed: no spectrum.png")


def render_markdown(report: dict) -> str:
    thresholds = report["thresholds"]
    keys = [f"{t:g}" for t in thresholds]
    lines = [f"# Attention spectrum of {report['model']}", "",
             f"{report['windows']} calibration windows of {report['seq_len']} tokens ({report['data']}). Per layer, "
             "the mean over heads of the rank that reaches each fraction of the energy (sum of squared singular "
             "values) of the softmax attention matrices; the lowest-rank layers are the candidates for "
             "Primal-Attention.", "",
             "| layer | " + " | ".join(f"rank @ {float(k):.0%}" for k in keys) + " | max head rank @ "
             f"{float(keys[0]):.0%} |",
             "|---:|" + "---:|" * (len(keys) + 1)]
    for entry in report["layers"]:
        worst = max(h["energy_ranks"][keys[0]] for h in entry["heads"])
        lines.append(f"| {entry['layer']} | " + " | ".join(f"{entry['mean_energy_ranks'][k]:.1f}" for k in keys)
                     + f" | {worst:.1f} |")
    lines += ["", f"Candidates (lowest rank @ {float(keys[0]):.0%} first): "
              + ", ".join(str(i) for i in report["candidates"][:8]), ""]
    return "\n".join(lines)


def plot_spectrum(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = report["layers"]
    key = f"{report['thresholds'][0]:g}"
    heat = np.array([[h["energy_ranks"][key] for h in entry["heads"]] for entry in layers])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    image = left.imshow(heat.T, aspect="auto", cmap="viridis", origin="lower")
    left.set_xlabel("layer")
    left.set_ylabel("head")
    left.set_xticks(range(len(layers)))
    left.set_xticklabels([str(e["layer"]) for e in layers], fontsize=6)
    left.set_title(f"rank reaching {float(key):.0%} of the attention energy")
    fig.colorbar(image, ax=left)
    colors = plt.cm.plasma(np.linspace(0, 0.9, len(layers)))
    for entry, color in zip(layers, colors):
        curve = np.mean([h["cumulative_singular_values"] for h in entry["heads"]], axis=0)
        right.plot(np.arange(1, len(curve) + 1), curve, color=color, linewidth=1, label=str(entry["layer"]))
    right.set_xscale("log")
    right.set_xlabel("number of singular values")
    right.set_ylabel("normalized cumulative singular values")
    right.set_title("mean over heads, per layer (dark: first, light: last)")
    right.grid(alpha=0.3)
    fig.suptitle(f"Attention spectrum of {report['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
