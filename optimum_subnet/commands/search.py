"""``optimum-cli subnet search``."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import (add_common_model_args, add_data_args, check_numbers, fraction, non_negative, positive, setup_logging,
                     user_errors)


class SubnetSearchCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", default="smollm2-135m",
                            help="built-in alias (smollm2-135m), local folder or hub id (default: smollm2-135m)")
        parser.add_argument("--target-ratio", type=float,
                            help="kept fraction of the parameters (all of them, or of the decoder blocks with "
                                 "--ratio-of blocks), in (0, 1] (default with --spec: the spec's, with --config: "
                                 "the config's)")
        parser.add_argument("--ratio-of", choices=["all", "blocks"],
                            help="what --target-ratio is a fraction of: all parameters (default, as the paper counts) "
                                 "or the decoder blocks only (for models whose embeddings are most of the parameters, "
                                 "e.g. gemma3-270m); reports give both")
        parser.add_argument("--output", required=True, help="folder to write the subnet to")
        parser.add_argument("--method", default="ours", choices=["ours", "flap", "wanda-sp", "magnitude", "random"],
                            help="ours: importance + evolutionary search + reformation (default); or a structured "
                                 "pruning baseline (FLAP, Wanda-sp, magnitude, random) under the same budget")
        parser.add_argument("--attention-unit", choices=["head", "pair"],
                            help="baselines: prune whole KV heads (the papers, default) or RoPE channel pairs "
                                 "inside heads (our search space)")
        parser.add_argument("--structure", choices=["uniform", "global"],
                            help="baselines: same ratio in every layer, or FLAP's global standardized threshold "
                                 "(default: each method's own)")
        parser.add_argument("--bias-compensation", choices=["on", "off"],
                            help="baselines: add the removed channels' mean output as a bias (FLAP's default)")
        parser.add_argument("--preset", default="auto", choices=["auto", "fast", "paper"],
                            help="auto: paper settings with a GPU, fast without")
        parser.add_argument("--config", help="a subnet_optimization.json to start from (overrides --preset)")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--generations", type=int)
        parser.add_argument("--population", type=int, help="candidates per generation")
        parser.add_argument("--screening-keep", type=float, metavar="FRACTION",
                            help="rank each generation's candidates on one short window first and give only this "
                                 "fraction the full fitness (successive halving; default 1: off, the paper)")
        add_data_args(parser)
        parser.add_argument("--reformation", choices=["closed_form", "admm", "none"])
        parser.add_argument("--attention-pruning", choices=["auto", "in_head", "none"],
                            help="ours: prune attention by RoPE pairs inside heads (in_head), leave it whole (none: "
                                 "MLP widths and depth only), or the family's default (auto: whole for q/k-norm "
                                 "families such as Qwen3 and Gemma3, in_head for the others)")
        parser.add_argument("--attention-masks", choices=["kv_head", "layer"],
                            help="one attention channel mask per KV head (paper) or one per layer (all heads keep the "
                                 "same RoPE channels: faster fused attention in ONNX Runtime)")
        parser.add_argument("--head-dim-multiple", type=int, help="round head sizes to this multiple (default 8; "
                                                                 "16 lets ONNX Runtime fuse RoPE into attention)")
        parser.add_argument("--mlp-multiple", type=int, help="round MLP widths to this multiple (default 64)")
        parser.add_argument("--faithfulness-prompts", type=int,
                            help="BoolQ prompts for the report's AtMan faithfulness check (default 4; 0: off)")
        parser.add_argument("--min-faithfulness", type=float, metavar="SPEARMAN",
                            help="search constraint: reject candidates whose AtMan relevance maps have a mean "
                                 "Spearman correlation with the dense model's below this (off by default)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace a non-empty output folder (and discard an interrupted run unless --resume)")
        parser.add_argument("--resume", action="store_true",
                            help="continue the interrupted search checkpointed in OUTPUT.partial (same arguments)")
        parser.add_argument("--spec", help="skip the search: reform and save this subnet_config.json (or a subnet "
                                           "folder holding one)")
        parser.add_argument("--skip-memory-check", action="store_true",
                            help="start even if the estimated peak memory exceeds the available memory")
        parser.add_argument("--offload", choices=["auto", "on", "off"],
                            help="keep the weights in CPU memory and stream the decoder blocks to the GPU one at a "
                                 "time: auto (default) when the model does not fit on the GPU, on, or off")
        parser.add_argument("--offload-folder", metavar="DIR",
                            help="keep the weights memory-mapped from disk (converted to --dtype in DIR when the "
                                 "checkpoint holds another dtype), for models larger than the RAM")
        add_common_model_args(parser)

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)

        def resume_hint() -> str:
            from optimum_subnet.pipeline.checkpoint import has_progress, work_dir_for

            if has_progress(args.output):
                return f"; the search checkpoint in {work_dir_for(args.output)} is kept: rerun with --resume"
            return ""

        with user_errors(resume_hint):
            check_numbers(
                ("--target-ratio", args.target_ratio, fraction, "in (0, 1] (the kept fraction of all parameters)"),
                ("--generations", args.generations, non_negative, ">= 0 (0: the initial subnet, no search)"),
                ("--population", args.population, lambda v: v >= 2, "at least 2 (candidates per generation)"),
                ("--screening-keep", args.screening_keep, fraction, "in (0, 1] (1: no screening)"),
                ("--num-samples", args.num_samples, positive, "a positive number of calibration windows"),
                ("--seq-len", args.seq_len, lambda v: v >= 2, "at least 2 tokens"),
                ("--eval-seq-len", args.eval_seq_len, lambda v: v >= 2, "at least 2 tokens"),
                ("--eval-max-windows", args.eval_max_windows, positive,
                 "a positive number of windows (leave it out for all)"),
                ("--head-dim-multiple", args.head_dim_multiple, positive, "a positive integer"),
                ("--mlp-multiple", args.mlp_multiple, positive, "a positive integer"),
                ("--faithfulness-prompts", args.faithfulness_prompts, non_negative,
                 "a number of prompts >= 0 (0: off)"),
                ("--min-faithfulness", args.min_faithfulness, lambda v: -1 <= v <= 1,
                 "a Spearman correlation in [-1, 1]"),
            )
            from pathlib import Path

            from optimum_subnet import SubnetConfig, SubnetOptimizer, SubnetSpec
            from optimum_subnet.core.files import check_output_dir

            inputs = [args.model, args.calibration_dataset, args.eval_dataset, args.config, args.spec]
            check_output_dir(args.output, args.overwrite, protected=[p for p in inputs if p and Path(p).exists()])
            spec = SubnetSpec.load(args.spec) if args.spec else None  # a bad spec fails before the model loads
            ratio = _target_ratio(args.target_ratio, spec, args.config, args.ratio_of or "all")
            if args.config:
                config = SubnetConfig.from_pretrained(args.config).replace(target_ratio=ratio)
                if args.method != "ours":
                    config = config.replace(method=args.method)
            else:
                config = SubnetConfig.preset(args.preset, ratio, method=args.method)
            bias = None if args.bias_compensation is None else args.bias_compensation == "on"
            if args.population is not None:
                # keep the paper's proportions N_m = N/2, N_c = 0.3 N, k = N/10 for another N
                n = args.population
                config = config.replace(search__population_size=n, search__num_mutations=max(1, n // 2),
                                        search__num_crossovers=max(0, (3 * n) // 10),
                                        search__top_k=max(2, min(n, n // 10 if n >= 20 else n // 4)))
            config = config.replace(
                seed=args.seed, device=args.device, dtype=args.dtype, ratio_of=args.ratio_of, offload=args.offload,
                search__generations=args.generations, search__screening_keep=args.screening_keep,
                data__dataset=args.calibration_dataset, data__eval_dataset=args.eval_dataset,
                data__text_column=args.text_column, data__num_samples=args.num_samples,
                data__seq_len=args.seq_len, data__eval_seq_len=args.eval_seq_len,
                data__eval_max_windows=args.eval_max_windows, reformation__method=args.reformation,
                search__attention_mask_sharing=args.attention_masks, search__attention_pruning=args.attention_pruning,
                search__head_dim_multiple=args.head_dim_multiple, search__mlp_multiple=args.mlp_multiple,
                faithfulness__prompts=args.faithfulness_prompts, faithfulness__min_spearman=args.min_faithfulness,
                baseline__attention_unit=args.attention_unit, baseline__structure=args.structure,
                baseline__bias_compensation=bias,
            )
            optimizer = SubnetOptimizer.from_pretrained(args.model, dtype=args.dtype,
                                                        trust_remote_code=args.trust_remote_code,
                                                        offload_folder=args.offload_folder)
            path = optimizer.optimize(config, args.output, overwrite=args.overwrite, resume=args.resume, spec=spec,
                                      check_memory=not args.skip_memory_check)
            import os

            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes the output and reports
                _print_summary(path)


def _target_ratio(ratio, spec, config_file, ratio_of: str):
    """The target ratio: given, or the spec's (``--spec``), or the config file's (``None`` keeps it)."""
    from optimum_subnet.core.errors import SubnetError

    if spec is not None:
        kept = spec.block_ratio() if ratio_of == "blocks" else spec.inheriting_ratio()
        if ratio is not None and abs(ratio - kept) > 0.005:
            raise SubnetError(f"--spec keeps {kept:.4f} of the parameters but --target-ratio is "
                              f"{ratio}; leave --target-ratio out with --spec")
        return kept
    if ratio is None and not config_file:
        raise SubnetError("pass --target-ratio (the kept fraction of all parameters, in (0, 1])")
    return ratio


def _print_summary(path) -> None:
    import json
    import sys

    report = json.loads((path / "report.json").read_text())
    sys.stdout.write((path / "report.md").read_text())
    sys.stdout.write(f"\nSubnet written to {path} (inheriting ratio {report['subnet']['inheriting_ratio']:.4f}).\n")
