"""What building one search candidate costs when the weights cost nothing: Python construction overhead.

    OMP_NUM_THREADS=1 python benchmarks/candidate_build.py [--layers 32] [--repeats 10]

A LLaMA model with LLaMA-7B's layer and head counts but tiny widths (hidden 256, head size 8, MLP 344), so
that slicing moves almost no bytes: the median time of ``extract_subnet`` for a uniform 0.5 spec is the
per-candidate cost of creating modules, slicing ~7 tensors per layer and loading the state dict, which a
short screening forward on a GPU does not hide (issue 15: 0.126 s per 512-token screening at 7B shape on an
H100). Prints the median and the top functions of a profile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from optimum_subnet.families import get_adapter
    from optimum_subnet.stages.surgery import extract_subnet
    from search_cost import uniform_spec

    config = LlamaConfig(hidden_size=256, intermediate_size=344, num_hidden_layers=args.layers,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=8, vocab_size=1000,
                         max_position_embeddings=4096)
    model = LlamaForCausalLM(config).eval()
    adapter = get_adapter(model.config)
    spec = uniform_spec(adapter.shape(model.config), 0.5)
    for _ in range(3):
        extract_subnet(model, spec, adapter, validate=False)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        extract_subnet(model, spec, adapter, validate=False)
        times.append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.layers} layers: "
          f"median {statistics.median(times) * 1000:.1f} ms per candidate "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {args.repeats} builds)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        extract_subnet(model, spec, adapter, validate=False)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumtime").print_stats(15)
    print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
