"""Where a q/k-norm family's primal layer takes its queries and keys (issue 16): after the per-head norms
(what ships: the family's softmax compares the normalized vectors) or before them, on Gemma3-270M.

    python benchmarks/primal_qk_norm.py [--model gemma3-270m] [--layers 2] [--ranks 16 64]

Replaces the last ``--layers`` layers (calibration fit only, as the pass does) with the feature maps
taken after the norms and, for comparison, before them (the norms skipped), and reports held-out
perplexity and each layer's unexplained output fraction. The layers before the first replaced one run
once (``SuffixRunner``). Writes ``benchmarks/results/primal_qk_norm_gemma3.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
logger = logging.getLogger("benchmarks.primal_qk_norm")


@contextlib.contextmanager
def norms_skipped():
    """``PrimalAttention.project`` without the q/k norms (the variant that does *not* ship)."""
    from optimum_subnet.primal.modeling_primal import PrimalAttention

    original = PrimalAttention.project

    def project(self, hidden_states):
        b, n, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(b, n, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(b, n, self.num_key_value_heads, self.head_dim)
        return q.transpose(1, 2).float(), k.transpose(1, 2).float()

    PrimalAttention.project = project
    try:
        yield
    finally:
        PrimalAttention.project = original


def mean_attention(model, adapter, runner, states, indices):
    """Replace the attention of ``indices`` (consecutive, in order) by its mean output on the calibration
    states that reach it; returns the original modules by layer."""
    import torch

    class Constant(torch.nn.Module):
        def __init__(self, mean, replaced):
            super().__init__()
            self.mean = mean
            self.is_sliding = getattr(replaced, "is_sliding", False)  # Gemma3's layer picks its rotary table by it

        def forward(self, hidden_states, *args, **kwargs):
            return self.mean.to(hidden_states.dtype).expand_as(hidden_states).clone(), None

    layers = adapter.decoder_layers(model)
    originals = {}
    with torch.no_grad():
        for i in indices:
            layer, total, count = layers[i], 0.0, 0
            for h in states:
                context = runner.context(h)
                y, _ = layer.self_attn(hidden_states=layer.input_layernorm(h),
                                       attention_mask=adapter.layer_mask(layer, context),
                                       position_embeddings=adapter.layer_rotary(layer, context))
                total, count = total + y.double().sum((0, 1)), count + y.shape[0] * y.shape[1]
            originals[i], layer.self_attn = layer.self_attn, Constant((total / count).float(), layer.self_attn)
            states = [adapter.run_layer(layer, h, runner.context(h)) for h in states]
    return originals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=8)
    parser.add_argument("--output", default=str(RESULTS / "primal_qk_norm_gemma3"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import torch

    from optimum_subnet import data as D
    from optimum_subnet.core.environment import package_versions
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.loading import load_model
    from optimum_subnet.primal.convert import SuffixRunner, fit_primal_layers

    torch.manual_seed(0)
    model, tokenizer = load_model(args.model)
    adapter = get_adapter_for_subnet(model.config)
    layers = adapter.decoder_layers(model)
    n = len(layers)
    indices = list(range(n - args.layers, n))
    calibration = D.calibration_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "calibration"), tokenizer),
                                        args.samples, args.seq_len, seed=0)
    held_out = D.evaluation_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "evaluation"), tokenizer), 512,
                                    args.eval_windows)
    runner = SuffixRunner(model, adapter, indices[0], "cpu")
    clock = time.perf_counter()
    cal, ev = runner.prefix(calibration, 8), runner.prefix(held_out, 4)
    logger.info("prefix states in %.0f s", time.perf_counter() - clock)
    types = getattr(model.config, "layer_types", None)
    rows = [{"variant": "base", "perplexity": runner.perplexity(ev, held_out)}]
    logger.info("%s", rows[-1])
    originals = mean_attention(model, adapter, runner, cal, indices)
    try:  # what a primal layer reproducing only the attention's mean would give (the fit's floor)
        rows.append({"variant": "mean attention (a constant)", "perplexity": runner.perplexity(ev, held_out)})
    finally:
        for i, module in originals.items():
            layers[i].self_attn = module
    logger.info("%s", rows[-1])
    for rank in args.ranks:
        for variant, context in (("after the q/k norms (ships)", contextlib.nullcontext), ("before the q/k norms",
                                                                                             norms_skipped)):
            with context():
                originals, fits = fit_primal_layers(model, adapter, {i: rank for i in indices}, cal, indices[0],
                                                    ridge=None)
                try:
                    value = runner.perplexity(ev, held_out)
                finally:
                    for i, module in originals.items():
                        layers[i].self_attn = module
            rows.append({"variant": variant, "rank": rank, "perplexity": value,
                         "output_residual": {f.layer: round(f.output_residual, 4) for f in fits},
                         "kernel_energy_kept": {f.layer: round(sum(f.kernel_energy_kept) / len(f.kernel_energy_kept), 4)
                                                for f in fits}})
            logger.info("%s", rows[-1])
    data = {"model": args.model, "layers": indices, "layer_types": [types[i] for i in indices] if types else None,
            "settings": {k: getattr(args, k) for k in ("samples", "seq_len", "eval_windows", "ranks")},
            "environment": {"torch_threads": torch.get_num_threads(), "versions": package_versions()}, "rows": rows}
    output = Path(args.output)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# Primal-Attention on {args.model}: feature maps after or before the q/k norms", "",
             f"Last {args.layers} layers ({', '.join(f'{i} ({t})' for i, t in zip(indices, data['layer_types'] or []))})"
             f" replaced, calibration fit only ({args.samples} x {args.seq_len} tokens); held-out perplexity on "
             f"{args.eval_windows} windows of 512 tokens of the enwiki-extract held-out split. CPU.", "",
             f"Base: {rows[0]['perplexity']:.2f}.", "",
             "| feature maps | rank | perplexity | output residual per layer | kernel energy kept per layer |",
             "|---|---:|---:|---|---|"]
    for r in rows[1:]:
        if "rank" not in r:
            lines.append(f"| {r['variant']} | - | {r['perplexity']:.2f} | - | - |")
            continue
        lines.append(f"| {r['variant']} | {r['rank']} | {r['perplexity']:.2f} | "
                     + ", ".join(f"{k}: {v:.3f}" for k, v in r["output_residual"].items()) + " | "
                     + ", ".join(f"{k}: {v:.3f}" for k, v in r["kernel_energy_kept"].items()) + " |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
