"""Primal-Attention on SmolLM2-135M (issue 16): spectrum of all layers, held-out perplexity after
replacing the last 1 / 2 / 4 layers at two ranks (calibration fit alone, then after the fine-tune),
against the dense model and against dropping those layers (whole layers, or only their attention),
and composed with a searched 0.8 subnet.

    python benchmarks/primal.py --work-dir /tmp/primal-bench [--subnet DIR] [--ranks 8 32]
                                [--fine-tune-steps 200] [--only dense|subnet|spectrum]
    python benchmarks/primal.py --redraw     # only rewrite the Markdown from the JSON

Resumable: every finished row is written to ``WORK_DIR/rows.json`` (atomically) and skipped when the
script runs again with the same settings. The layers before the first replaced one are run once per
model for all windows (``SuffixRunner``): every row runs only the last layers, so rows differ only in
what they measure. Writes benchmarks/results/primal_smollm2.{json,md} and primal_spectrum_smollm2.*.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
logger = logging.getLogger("benchmarks.primal")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--subnet", help="a searched subnet folder (optimum-cli subnet search ... --target-ratio 0.8)")
    parser.add_argument("--work-dir", default="/tmp/primal-bench")
    parser.add_argument("--ranks", type=int, nargs=2, default=[8, 32])
    parser.add_argument("--layer-counts", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--subnet-layers", type=int, nargs="+", default=[1, 2, 4],
                        help="last layers replaced in the subnet (counts)")
    parser.add_argument("--layer-set", type=lambda t: [int(i) for i in t.split(",")], action="append",
                        help="also replace exactly these layers (e.g. the diagnosis' candidates 23,24)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=24)
    parser.add_argument("--fine-tune-steps", type=int, default=200)
    parser.add_argument("--fine-tune-batch", type=int, default=2)
    parser.add_argument("--kl-tokens", type=int, help="positions per window in the KL (default: all)")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--spectrum-windows", type=int, default=4)
    parser.add_argument("--only", choices=["spectrum", "dense", "subnet"], action="append")
    parser.add_argument("--output", default=str(RESULTS / "primal_smollm2"))
    parser.add_argument("--redraw", action="store_true")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="merge the rows of runs made with the same settings (e.g. layer counts run in parallel)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.redraw:
        write_markdown(json.loads(output.with_suffix(".json").read_text()), output)
        return 0
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        rows = {}
        for part in parts:
            for row in part["rows"]:
                rows.setdefault(row["name"], row)
        counts = {key: sorted({k for p in parts for k in _counts(p["settings"].get(key))})
                  for key in ("layer_counts", "subnet_layers")}
        data = {"settings": {**parts[0]["settings"], **counts},
                "environment": next((p["environment"] for p in parts if "environment" in p), None) or environment(),
                "rows": list(rows.values())}
        output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
        write_markdown(data, output)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    parts = args.only or ["spectrum", "dense", "subnet"]
    settings = {k: getattr(args, k) for k in ("model", "ranks", "layer_counts", "layer_set", "subnet_layers", "samples", "seq_len",
                                              "eval_windows", "fine_tune_steps", "fine_tune_batch", "kl_tokens",
                                              "learning_rate", "eta")}
    store = RowStore(work / "rows.json", settings)
    if "spectrum" in parts:
        spectrum(args, work)
    if "dense" in parts:
        run_model(args, store, args.model, "dense", args.layer_counts, args.layer_set)
    if "subnet" in parts:
        if args.subnet:
            run_model(args, store, args.subnet, "subnet 0.8", args.subnet_layers)
        else:
            logger.warning("no --subnet given: the composition rows are skipped")
    data = {"settings": settings, "environment": environment(), "rows": store.rows}
    from optimum_subnet.core.files import write_json

    write_json(output.with_suffix(".json"), data)
    write_markdown(data, output)
    return 0


def _counts(value) -> list[int]:
    """A layer-count setting as a list (``subnet_layers`` was one count before it took several)."""
    return [] if value is None else [value] if isinstance(value, int) else list(value)


class RowStore:
    """Finished rows by name, persisted after each (a rerun with other settings starts over)."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        saved = json.loads(path.read_text()) if path.is_file() else {}
        self.rows = saved.get("rows", []) if saved.get("settings") == settings else []

    def get(self, name: str):
        return next((r for r in self.rows if r["name"] == name), None)

    def put(self, row: dict) -> None:
        from optimum_subnet.core.files import write_json

        self.rows = [r for r in self.rows if r["name"] != row["name"]] + [row]
        write_json(self.path, {"settings": self.settings, "rows": self.rows})
        logger.info("%s", {k: v for k, v in row.items() if k != "fine_tune_log"})


def environment() -> dict:
    import os

    import torch

    from optimum_subnet.pipeline.optimizer import package_versions

    return {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "versions": package_versions()}


def spectrum(args, work: Path) -> None:
    from optimum_subnet.primal import PrimalConfig, PrimalOptimizer

    target = work / "spectrum"
    if not (target / "spectrum.json").is_file():
        config = PrimalConfig(device="cpu").replace(diagnose__windows=args.spectrum_windows,
                                                    diagnose__seq_len=args.seq_len)
        PrimalOptimizer.from_pretrained(args.model).diagnose(config, target, overwrite=True)
    for suffix in ("json", "md", "png"):
        shutil.copyfile(target / f"spectrum.{suffix}", RESULTS / f"primal_spectrum_smollm2.{suffix}")


def run_model(args, store: RowStore, model_name: str, label: str, layer_counts, layer_sets=None) -> None:
    import torch

    from optimum_subnet import data as D
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.loading import load_model
    from optimum_subnet.primal.config import FineTuneConfig
    from optimum_subnet.primal.convert import SuffixRunner, fit_primal_layers
    from optimum_subnet.primal.finetune import Distiller

    class ZeroAttention(torch.nn.Module):
        """Stands in for an attention module whose output is dropped (the residual stream passes)."""

        def forward(self, hidden_states, *args, **kwargs):
            return torch.zeros_like(hidden_states), None

    class ConstantAttention(torch.nn.Module):
        """Outputs the original attention's mean output on the calibration data (the fit's intercept alone)."""

        def __init__(self, mean):
            super().__init__()
            self.mean = mean

        def forward(self, hidden_states, *args, **kwargs):
            return self.mean.to(hidden_states.dtype).expand_as(hidden_states).clone(), None

    @torch.no_grad()
    def mean_attention(states, indices):
        """Replace the attention of ``indices`` by its calibration mean, in order (as the fit does)."""
        replaced = {}
        for i in range(min(indices), max(indices) + 1):
            layer = layers[i]
            if i not in indices:
                states = [adapter.run_layer(layer, h, runner.context(h)) for h in states]
                continue
            total, count = 0.0, 0
            for h in states:
                context = runner.context(h)
                y, _ = layer.self_attn(hidden_states=layer.input_layernorm(h),
                                       attention_mask=adapter.layer_mask(layer, context),
                                       position_embeddings=adapter.layer_rotary(layer, context))
                total, count = total + y.double().sum((0, 1)), count + y.shape[0] * y.shape[1]
            replaced[i], layer.self_attn = layer.self_attn, ConstantAttention((total / count).float())
            states = [adapter.run_layer(layer, h, runner.context(h)) for h in states]
        return replaced

    torch.manual_seed(0)
    model, tokenizer = load_model(model_name)
    adapter = get_adapter_for_subnet(model.config)
    layers = adapter.decoder_layers(model)
    n = len(layers)
    calibration = D.calibration_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "calibration"), tokenizer),
                                        args.samples, args.seq_len, seed=0)
    held_out = D.evaluation_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "evaluation"), tokenizer), 512,
                                    args.eval_windows)
    sets = [(f"last {k}", k, tuple(range(n - k, n))) for k in layer_counts]
    sets += [(f"layers {','.join(map(str, chosen))}", ",".join(map(str, chosen)), tuple(chosen))
             for chosen in (layer_sets or [])]
    first = min(min(indices) for _, _, indices in sets)
    runner = SuffixRunner(model, adapter, first, "cpu")
    clock = time.perf_counter()
    cal0, eval0 = runner.prefix(calibration, 8), runner.prefix(held_out, 4)
    logger.info("%s: prefix states through layer %d in %.0f s", label, first, time.perf_counter() - clock)
    params = sum(p.numel() for p in model.parameters())

    def advance(states, start):  # the states entering layer ``start`` from those entering ``first``
        with torch.no_grad():
            for layer in list(layers)[first:start]:
                states = [adapter.run_layer(layer, h, runner.context(h)) for h in states]
        return states

    def ppl(start, eval_states, suffix=None):
        r = SuffixRunner(model, adapter, start, "cpu")
        return r.perplexity(eval_states, held_out, layers=suffix)

    if store.get(f"{label}: base") is None:
        store.put({"name": f"{label}: base", "model": label, "layers": 0, "method": "base", "parameters": params,
                   "perplexity": ppl(first, eval0)})
    for tag, key, indices in sets:
        start = min(indices)
        cal, ev = advance(cal0, start), advance(eval0, start)
        if label == "dense":
            if store.get(f"{label}: drop {tag} layers") is None:
                kept = [layers[i] for i in range(start, n) if i not in indices]
                store.put({"name": f"{label}: drop {tag} layers", "model": label, "layers": key,
                           "method": "drop layers", "perplexity": ppl(start, ev, suffix=kept)})
            if store.get(f"{label}: drop {tag} attention") is None:
                originals = {i: layers[i].self_attn for i in indices}
                for i in originals:
                    layers[i].self_attn = ZeroAttention()
                try:
                    value = ppl(start, ev)
                finally:
                    for i, module in originals.items():
                        layers[i].self_attn = module
                store.put({"name": f"{label}: drop {tag} attention", "model": label, "layers": key,
                           "method": "drop attention", "perplexity": value})
        if store.get(f"{label}: mean attention {tag}") is None:
            originals = mean_attention(cal, indices)
            try:
                value = ppl(start, ev)
            finally:
                for i, module in originals.items():
                    layers[i].self_attn = module
            store.put({"name": f"{label}: mean attention {tag}", "model": label, "layers": key,
                       "method": "mean attention", "perplexity": value})
        for rank in args.ranks:
            name = f"{label}: primal {tag} rank {rank}"
            if store.get(name) is not None:
                continue
            plan = {i: rank for i in indices}
            clock = time.perf_counter()
            originals, fits = fit_primal_layers(model, adapter, plan, cal, start, ridge=None)
            fit_s = time.perf_counter() - clock
            try:
                row = {"name": name, "model": label, "layers": key, "rank": rank, "method": "primal",
                       "fit_seconds": round(fit_s, 1), "perplexity_fit": ppl(start, ev),
                       "fit": [f.to_dict() for f in fits]}
                if args.fine_tune_steps:
                    config = FineTuneConfig(steps=args.fine_tune_steps, batch_size=args.fine_tune_batch,
                                            learning_rate=args.learning_rate, eta=args.eta,
                                            kl_tokens=args.kl_tokens, warmup_steps=min(10, args.fine_tune_steps // 5))
                    distiller = Distiller(model, adapter, originals, start, "cpu")
                    clock = time.perf_counter()
                    log = distiller.train(cal, config, seed=0)
                    row["fine_tune_seconds"] = round(time.perf_counter() - clock, 1)
                    row["seconds_per_step"] = round(row["fine_tune_seconds"] / args.fine_tune_steps, 3)
                    row["perplexity_fine_tuned"] = ppl(start, ev)
                    row["fine_tune_log"] = log
                row["parameters"] = sum(p.numel() for p in model.parameters())
            finally:
                for i, module in originals.items():
                    layers[i].self_attn = module
            store.put(row)
    del model


def write_markdown(data: dict, output: Path) -> None:
    s, rows = data["settings"], data["rows"]
    env = data.get("environment", {})
    lines = ["# Primal-Attention on SmolLM2-135M", "",
             f"Held-out perplexity on {s['eval_windows']} windows of 512 tokens of the enwiki-extract held-out split "
             f"(a WikiText-2 substitute); calibration (fit and fine-tune): {s['samples']} x {s['seq_len']} tokens of "
             f"its calibration split. Fine-tune: {s['fine_tune_steps']} steps of {s['fine_tune_batch']} window(s)"
             + (f" (KL on {s['kl_tokens']} random positions per window)" if s.get("kl_tokens") else "") + ", "
             f"AdamW lr {s['learning_rate']}, eta {s['eta']} (KL to the original model + eta * J^2), only the primal "
             f"layers trained. CPU, {env.get('torch_threads', '?')} torch threads, shared machine "
             f"(timings are indicative).", "",
             "Columns: *drop layers* removes those decoder layers; *drop attention* makes their attention output zero "
             "(the residual stream passes); *mean attention* outputs the original attention's mean on the calibration "
             "data (what the primal fit's intercept alone gives); *primal fit* is the calibration fit (no training); "
             "*+ fine-tune* adds the distillation fine-tune.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        base = next(r for r in rows if r["model"] == model and r["method"] == "base")
        lines += [f"## {model}", "", f"Base: {base['perplexity']:.2f} ({base['parameters']:,} parameters).", "",
                  "| layers replaced | drop layers | drop attention | mean attention | "
                  + " | ".join(f"primal s={r} fit | primal s={r} + fine-tune" for r in s["ranks"]) + " |",
                  "|---:|---:|---:|---:|" + "---:|---:|" * len(s["ranks"])]
        keys = {r["layers"] for r in rows if r["model"] == model and r["layers"]}
        for k in sorted(keys, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, str(v))):
            def get(method, rank=None):
                return next((r for r in rows if r["model"] == model and r["layers"] == k and r["method"] == method
                             and (rank is None or r.get("rank") == rank)), None)
            cells = []
            for method in ("drop layers", "drop attention", "mean attention"):
                row = get(method)
                cells.append(f"{row['perplexity']:.2f}" if row else "-")
            for rank in s["ranks"]:
                row = get("primal", rank)
                cells.append(f"{row['perplexity_fit']:.2f}" if row else "-")
                cells.append(f"{row['perplexity_fine_tuned']:.2f}" if row and "perplexity_fine_tuned" in row else "-")
            lines.append(f"| {'last ' + str(k) if isinstance(k, int) else k} | " + " | ".join(cells) + " |")
        timing = [r for r in rows if r["model"] == model and r["method"] == "primal"]
        if timing:
            lines += ["", "| replaced | rank | fit s | fine-tune s/step | output residual per layer (fit) |",
                      "|---:|---:|---:|---:|---|"]
            for r in sorted(timing, key=lambda r: (str(r["layers"]).zfill(3), r["rank"])):
                residuals = ", ".join(f"{f['layer']}: {f['output_residual']:.3f}" for f in r["fit"])
                lines.append(f"| {r['layers']} | {r['rank']} | {r['fit_seconds']} | {r.get('seconds_per_step', '-')} "
                             f"| {residuals} |")
        lines.append("")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
