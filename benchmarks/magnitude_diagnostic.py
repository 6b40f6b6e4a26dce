"""Why magnitude pruning collapses SmolLM2: the MLP output energy of the channels each rule drops.

    python benchmarks/magnitude_diagnostic.py        # writes benchmarks/results/magnitude_diagnostic.json

For every layer, on a few calibration windows: the share of W_down's output energy
``sum_j ||x_j||^2 ||W_:,j||^2`` carried by the ``--drop`` input channels that structured magnitude
pruning removes (smallest ``||W_:,j||``) and by those Wanda-sp removes (smallest ``||W_:,j|| ||x_j||``),
and how many of the five largest-activation channels magnitude drops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--drop", type=int, default=256, help="channels dropped per layer (256 of 1536: the 0.9 run)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "magnitude_diagnostic.json"))
    args = parser.parse_args(argv)
    import torch

    from optimum_subnet import data as D
    from optimum_subnet.families import get_adapter
    from optimum_subnet.loading import load_model

    model, tokenizer = load_model(args.model)
    model.eval()
    ids = D.calibration_windows(D.tokenize_stream(D.load_texts("enwiki-extract", "calibration"), tokenizer),
                                args.windows, args.seq_len, seed=0)
    energy: dict[int, torch.Tensor] = {}

    def hook(index):
        def record(module, inputs, output):
            energy[index] = energy.get(index, 0) + inputs[0].float().pow(2).sum(dim=(0, 1))
        return record

    adapter = get_adapter(model.config)
    layers = adapter.decoder_layers(model)
    handles = [adapter.linears(layer)["down"].register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    rows = []
    for i, layer in enumerate(layers):
        column = adapter.linears(layer)["down"].weight.detach().float().norm(dim=0)
        x = energy[i].sqrt()
        contribution = (x * column) ** 2
        magnitude = torch.argsort(column)[: args.drop]
        wanda = torch.argsort(column * x)[: args.drop]
        top = set(torch.argsort(x, descending=True)[:5].tolist())
        rows.append({"layer": i, "magnitude_energy_removed": float(contribution[magnitude].sum() / contribution.sum()),
                     "wanda_energy_removed": float(contribution[wanda].sum() / contribution.sum()),
                     "top5_activation_channels_dropped_by_magnitude": len(top & set(magnitude.tolist())),
                     "max_over_median_activation": float(x.max() / x.median())})
        print(f"layer {i:2d}: energy removed by magnitude {rows[-1]['magnitude_energy_removed']:.3f}, by Wanda-sp "
              f"{rows[-1]['wanda_energy_removed']:.4f}; top-5 activation channels dropped by magnitude "
              f"{rows[-1]['top5_activation_channels_dropped_by_magnitude']}")
    Path(args.output).write_text(json.dumps({"model": args.model, "windows": args.windows, "seq_len": args.seq_len,
                                             "drop": args.drop, "layers": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
