"""What pruning channels inside heads costs a q/k-norm family (Gemma3, Qwen3), and where the cost comes from.

    python benchmarks/qk_norm_diagnostic.py                      # Gemma3-270M, widths 224 / 192 / 128 of 256

Per-head q/k RMSNorm (one weight over ``head_dim``, applied before RoPE) makes in-head pruning inexact: a subnet
that keeps ``k`` of a head's ``d`` channels normalizes q and k by the root mean square of the *kept* channels. For
every layer's attention pruned to the same kept channels (the importance-top RoPE pairs, one set per layer as the
search keeps them; MLP and depth untouched, no reformation), held-out perplexity of:

* ``subnet``: the real pruned model (the norm over the kept channels);
* ``full-statistics``: the dense model with the pruned channels zeroed *after* q/k normalization by the full head
  (and in V): what in-head pruning would compute if the norm kept its statistics. Not realizable by a smaller
  model (the statistics need every channel's projection); it separates the cost of losing the channels from the
  cost of the changed statistics;
* ``subnet, rescaled``: the real subnet with each layer's softmax scale multiplied by the calibration mean of
  ``rms_kept(q) / rms_all(q)`` times the same for k (a constant per layer, storable in the subnet's config);
* ``MLP instead``: attention whole, and the same number of parameters removed from every layer's MLP instead
  (importance-top channels kept): what the same budget costs spent on the MLP.

Writes ``<output>.json`` / ``.md``; the Markdown table comes last on stdout.
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
LOG = logging.getLogger("qk_norm_diagnostic")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--widths", type=int, nargs="+", default=[224, 192, 128], help="kept channels per head")
    parser.add_argument("--calibration-windows", type=int, default=8, help="256-token windows (importance, scales)")
    parser.add_argument("--eval-windows", type=int, default=8, help="held-out windows of --eval-seq-len tokens")
    parser.add_argument("--eval-seq-len", type=int, default=256)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "qk_norm_diagnostic_gemma3"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import torch

    from optimum_subnet import data as data_lib
    from optimum_subnet.algorithms import rope
    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.evaluation.perplexity import perplexity
    from optimum_subnet.families import get_adapter
    from optimum_subnet.loading import load_model
    from optimum_subnet.stages.importance import compute_importance
    from optimum_subnet.stages.surgery import extract_subnet

    model, tokenizer = load_model(args.model)
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    if not shape.qk_norm:
        raise SystemExit(f"{args.model} has no per-head q/k norms")
    bos = data_lib.bos_of(tokenizer)
    stream = data_lib.tokenize_stream(data_lib.load_texts("enwiki-extract", "calibration"), tokenizer)
    calibration = data_lib.calibration_windows(stream, args.calibration_windows, 256, 0, bos)
    held_out = data_lib.evaluation_windows(
        data_lib.tokenize_stream(data_lib.load_texts("enwiki-extract", "evaluation"), tokenizer),
        args.eval_seq_len, args.eval_windows, bos)
    ppl = lambda m: perplexity(m, held_out, 4)  # noqa: E731

    start = time.perf_counter()
    scores = compute_importance(model, adapter, calibration, 4, "cpu")
    attention, mlp_scores, *_ = scores.for_search("fluctuation", shape)
    # one channel set per layer (one q/k norm weight): pairs ranked by the layer's summed scores
    pair_order = [rope.fold(a.double(), shape.rotary_dim).sum(0).argsort(descending=True).tolist() for a in attention]
    layers = adapter.decoder_layers(model)
    results = {"model": args.model, "head_dim": shape.head_dim, "calibration_windows": args.calibration_windows,
               "eval": f"{args.eval_windows} held-out windows of {args.eval_seq_len} tokens", "rows": []}
    results["dense"] = ppl(model)
    LOG.info("dense %.3f", results["dense"])

    for width in args.widths:
        kept = [rope.channels_of(order[: width // 2], shape.head_dim, shape.rotary_dim) for order in pair_order]
        spec = SubnetSpec.dense(shape)
        for layer, channels in zip(spec.layers, kept):
            layer.attention_channels = [channels] * layer.num_kv_heads
        spec.validate()
        row = {"width": width}
        subnet = extract_subnet(model, spec, adapter)
        row["subnet"] = ppl(subnet)

        # the dense model, pruned channels zeroed after the full-head normalization (and in V)
        masks = []
        for channels in kept:
            mask = torch.zeros(shape.head_dim)
            mask[channels] = 1.0
            masks.append(mask)
        handles = []
        for layer, mask in zip(layers, masks):
            q_norm, k_norm = adapter.qk_norms(layer)
            zero_after = lambda module, inputs, output, m=mask: output * m  # noqa: E731
            handles += [q_norm.register_forward_hook(zero_after), k_norm.register_forward_hook(zero_after)]
            v = adapter.linears(layer)["v"]
            handles.append(v.register_forward_hook(
                lambda module, inputs, output, m=mask: (output.unflatten(-1, (-1, m.numel())) * m).flatten(-2)))
        row["full_statistics"] = ppl(model)
        for handle in handles:
            handle.remove()

        # per layer: mean rms_kept / rms_all of q and of k (pre-norm projections) on the calibration windows
        ratios = [[0.0, 0.0, 0] for _ in layers]
        handles = []
        for index, (layer, channels) in enumerate(zip(layers, kept)):
            for slot, role in ((0, "q"), (1, "k")):
                def record(module, inputs, output, index=index, slot=slot, channels=channels):
                    heads = output.unflatten(-1, (-1, shape.head_dim)).double()
                    full = heads.pow(2).mean(-1).sqrt()
                    part = heads[..., channels].pow(2).mean(-1).sqrt()
                    ratios[index][slot] += float((part / full).sum())
                    if slot == 0:
                        ratios[index][2] += full.numel()
                handles.append(adapter.linears(layer)[role].register_forward_hook(record))
        with torch.no_grad():
            adapter.final_hidden_states(model, calibration)  # the projections' outputs; no LM head needed
        for handle in handles:
            handle.remove()
        q_ratio = [r[0] / r[2] for r in ratios]
        # q has group_size heads per KV head: k's mean is over num_kv_heads entries per token
        k_ratio = [r[1] / (r[2] / shape.group_size) for r in ratios]
        for attn_layer, rq, rk in zip(adapter.decoder_layers(subnet), q_ratio, k_ratio):
            adapter.attention(attn_layer).scaling *= rq * rk
        row["subnet_rescaled"] = ppl(subnet)
        row["scale_factor"] = {"min": min(a * b for a, b in zip(q_ratio, k_ratio)),
                               "max": max(a * b for a, b in zip(q_ratio, k_ratio))}
        del subnet

        # the same parameters taken from the MLP instead (attention whole)
        saved = shape.attention_params(shape.num_key_value_heads, shape.head_dim) - shape.attention_params(
            shape.num_key_value_heads, width)
        mlp_width = shape.intermediate_size - round(saved / (shape.mlp_params(1) - shape.mlp_params(0)))
        spec = SubnetSpec.dense(shape)
        for layer, order in zip(spec.layers, mlp_scores):
            layer.mlp_channels = sorted(order.argsort(descending=True)[:mlp_width].tolist())
        row["mlp_instead"] = {"mlp_width": mlp_width, "ppl": ppl(extract_subnet(model, spec.validate(), adapter))}
        LOG.info("width %d: subnet %.3f, full statistics %.3f, rescaled %.3f, MLP instead %.3f", width, row["subnet"],
                 row["full_statistics"], row["subnet_rescaled"], row["mlp_instead"]["ppl"])
        results["rows"].append(row)
    results["seconds"] = time.perf_counter() - start

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    sys.stdout.write(markdown(results))
    return 0


def markdown(results: dict) -> str:
    dense = results["dense"]
    lines = [f"# In-head attention pruning with q/k norms: {results['model']}", "",
             f"Every layer's attention pruned to the same kept channels of its {results['head_dim']}-channel heads "
             "(importance-top RoPE pairs, one set per layer); MLP and depth untouched; no reformation. Held-out "
             f"perplexity on {results['eval']}; dense {dense:.2f}. `full statistics`: the dense model with the pruned "
             "channels zeroed after q/k normalization over the whole head (not realizable by a smaller model); "
             "`rescaled`: the subnet with each layer's softmax scale multiplied by the calibration mean of "
             "rms_kept/rms_all of q times that of k; `MLP instead`: attention whole, the same parameters removed "
             "from every layer's MLP (importance-top channels kept).", "",
             "| kept channels | subnet (norm over kept) | full statistics | subnet, rescaled | scale factors | "
             "MLP instead (width) |", "|---:|---:|---:|---:|---|---:|"]
    for row in results["rows"]:
        lines.append(f"| {row['width']} | {row['subnet']:.2f} | {row['full_statistics']:.2f} | "
                     f"{row['subnet_rescaled']:.2f} | {row['scale_factor']['min']:.3f}-{row['scale_factor']['max']:.3f} | "
                     f"{row['mlp_instead']['ppl']:.2f} ({row['mlp_instead']['mlp_width']}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
