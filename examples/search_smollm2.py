"""Search, reform and save a SmolLM2-135M subnet at 80% of its parameters, from Python.

    python examples/search_smollm2.py [--ratio 0.8] [--output smollm2-135m-subnet-80]

Then load it like any transformers model (importing optimum_subnet registers the subnet classes; or
pass trust_remote_code=True without the plugin installed).
"""

import argparse
import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import optimum_subnet  # noqa: F401  registers the subnet model types
from optimum_subnet import SubnetConfig, SubnetOptimizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--output", default="smollm2-135m-subnet-80")
    parser.add_argument("--preset", default="auto", choices=["auto", "fast", "paper"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    config = SubnetConfig.preset(args.preset, target_ratio=args.ratio)
    optimizer = SubnetOptimizer.from_pretrained("smollm2-135m")
    path = optimizer.optimize(config, args.output, overwrite=True)

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The history of the Roman Empire", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    logging.info("params: %d, sample: %r", model.num_parameters(), tokenizer.decode(out[0]))


if __name__ == "__main__":
    main()
