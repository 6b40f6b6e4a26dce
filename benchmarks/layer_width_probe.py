"""Is one layer's MLP width causal for the reformed quality? Set layer ``--layer``'s MLP width in two searched
subnets of a ``generalization_ablation.py`` work folder (today's engine's best and the reference engine's best),
repair the budget on the other layers (the search space's own repair, the probed layer frozen), reform as the
pass does, and score on the held-out windows.

    OMP_NUM_THREADS=2 python benchmarks/layer_width_probe.py --work WORK/r0.5 --seed 0 --layer 0 \\
        --current-width 1280 --reference-width 384        # ~10 min on 2 CPU cores

Output: one RESULT line per subnet (benchmarks/results/layer0_width_probe_05_s0.txt).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="a ratio folder of generalization_ablation.py's --work")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--current-width", type=int, default=1280, help="for today's engine's best subnet")
    parser.add_argument("--reference-width", type=int, default=384, help="for the reference engine's best subnet")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--eval-windows", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import reference_engine.state as reference_state
    from generalization_ablation import Context, ppl

    from optimum_subnet.algorithms.masks import resize_masks
    from optimum_subnet.search.space import LayerGene
    from optimum_subnet.search.state import genome_from_json

    work = Path(args.work)
    ctx = Context(argparse.Namespace(model=args.model, seed=args.seed, eval_windows=args.eval_windows, device="cpu"),
                  args.ratio, work)
    space, layer = ctx.space, args.layer

    def best_of(variant: str):
        return json.loads((work / f"{variant}.stages.json").read_text())["search"]["top"][0]

    current = genome_from_json(best_of("baseline"))
    reference = space.from_spec(ctx.variant_space(ctx.config, "reference").to_spec(
        reference_state.genome_from_json(best_of("reference_engine"))))
    for name, genome, width in (("today's engine's best", current, args.current_width),
                                ("reference engine's best", reference, args.reference_width)):
        genes = list(genome)
        gene = genes[layer]
        mlp = resize_masks(gene.mlp[None, :], width, space.mlp_ranks[layer])[0]  # by importance, as repair does
        genes[layer] = LayerGene(gene.attention, mlp, gene.heads)
        probed = space.repair(tuple(genes), random.Random(0), frozen=[layer])
        if probed is None:
            raise SystemExit(f"{name}: no subnet within the budget keeps layer {layer} at {width} channels")
        before, after = space.to_spec(genome), space.to_spec(probed)
        nll, selection = ctx.reformed(after)
        print(f"RESULT {name}: layer {layer} MLP {gene.mlp_width} -> {width}; parameters {before.params()} -> "
              f"{after.params()}; MLP widths {[g.mlp_width if g is not None else 0 for g in probed]}; reformed "
              f"held-out {ppl(nll):.2f} (selection windows {selection:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
