"""Recipe: replace the last layers of SmolLM2-135M (or of a subnet) by Primal-Attention, with the short
distillation fine-tune, from Python.

    python examples/primal_smollm2.py [--model smollm2-135m] [--layers last:2] [--rank 16] [--steps 200]
                                      [--output smollm2-primal]

1. ``diagnose`` first: the layers whose attention needs the fewest singular directions are the candidates.
2. ``optimize``: calibration fit (W_e / W_r from the KSVD of the calibration cosine kernel, the output
   projection by ridge regression), then ``steps`` steps of distillation from the original model on the
   calibration text (KL + eta * J^2, only the primal layers trained; checkpoints every 50 steps in
   ``OUTPUT.partial``: if the run is killed, run the same command with resume=True).
   On a 2-core CPU a step of SmolLM2 with two primal layers and one 256-token window takes a few
   seconds; on a GPU, raise ``fine_tune.batch_size`` and ``data.num_samples``.
3. The result loads like any transformers model; ``generate`` keeps a fixed-size state for the primal
   layers (their running sums) instead of their KV cache.
"""

import argparse
import json
import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import optimum_subnet  # noqa: F401  registers the subnet and Primal-Attention model types
from optimum_subnet.primal import PrimalConfig, PrimalOptimizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m", help="dense model or a saved subnet")
    parser.add_argument("--layers", default="last:2")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--output", default="smollm2-primal")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    config = PrimalConfig(layers=args.layers, rank=args.rank).replace(
        fine_tune__steps=args.steps, fine_tune__eta=0.1, fine_tune__learning_rate=5e-4, fine_tune__batch_size=2)
    optimizer = PrimalOptimizer.from_pretrained(args.model)
    spectrum = optimizer.diagnose(config, args.output + "-spectrum", overwrite=True)
    candidates = json.loads((spectrum / "spectrum.json").read_text())["candidates"]
    logging.info("lowest-rank attention (candidates first): %s", candidates[:6])

    path = optimizer.optimize(config, args.output, overwrite=True)
    logging.info("%s", json.loads((path / "primal_report.json").read_text())["perplexity"])

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The history of the Roman Empire", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    logging.info("sample: %r", tokenizer.decode(out[0]))


if __name__ == "__main__":
    main()
