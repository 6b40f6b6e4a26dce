"""``optimum-cli subnet benchmark``: speed and memory of a subnet against its dense model, one run."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import check_numbers, non_negative, positive, setup_logging, user_errors


def _int_list(text: str) -> list[int]:
    import argparse

    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


class SubnetBenchmarkCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", required=True, help="subnet (or any model) folder, or its ONNX export folder")
        parser.add_argument("--baseline", help="the dense model (folder or ONNX folder): measured in the same run, "
                                               "ratios reported")
        parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
        parser.add_argument("--backends", default="onnxruntime,pytorch",
                            help="comma-separated: onnxruntime (exported on the fly from a model folder), pytorch (SDPA), "
                                 "pytorch-static (static KV cache, CUDA-graph decode steps on CUDA)")
        parser.add_argument("--builder", choices=["direct", "torch"],
                            help="how a model folder is exported for the onnxruntime backend: direct (default where "
                                 "supported; decoded by the CUDA-graph generator) or torch (the slower path)")
        parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8], help="e.g. 1,8")
        parser.add_argument("--prompt-lengths", type=_int_list, default=[128, 2048], help="e.g. 128,2048")
        parser.add_argument("--new-tokens", type=int, default=128, help="decoded tokens per timed run")
        parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16"],
                            help="auto: fp16 on CUDA, fp32 on CPU")
        parser.add_argument("--warmup", type=int, default=2)
        parser.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
        parser.add_argument("--output", help="folder for benchmark.json / .md / .png (default: print only)")
        parser.add_argument("--overwrite", action="store_true", help="replace results already in --output")
        parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)
        with user_errors():
            check_numbers(
                ("--batch-sizes", args.batch_sizes, positive, "positive integers"),
                ("--prompt-lengths", args.prompt_lengths, positive, "positive numbers of tokens"),
                ("--new-tokens", args.new_tokens, positive, "a positive number of tokens"),
                ("--warmup", args.warmup, non_negative, "a number of runs >= 0"),
                ("--repeats", args.repeats, positive, "a positive number of timed runs"),
            )
            import sys
            from pathlib import Path

            from optimum_subnet.runtime.benchmark import BenchmarkConfig, benchmark, summary, write_results
            from optimum_subnet.core.errors import SubnetError
            from optimum_subnet.core.progress import progress_bar

            config = BenchmarkConfig(provider=args.provider, backends=[b.strip() for b in args.backends.split(",")
                                                                       if b.strip()],
                                     batch_sizes=args.batch_sizes, prompt_lengths=args.prompt_lengths,
                                     new_tokens=args.new_tokens, dtype=args.dtype, warmup=args.warmup,
                                     repeats=args.repeats, builder=args.builder).validate()
            if args.output and (Path(args.output) / "benchmark.json").exists() and not args.overwrite:
                raise SubnetError(f"{Path(args.output) / 'benchmark.json'} exists; pass --overwrite to replace it")
            total = (2 if args.baseline else 1) * len(config.backends) * len(config.batch_sizes) * len(
                config.prompt_lengths)
            with progress_bar(total=total, desc="Benchmark", unit="run") as bar:
                results = benchmark(args.model, args.baseline, config, progress=bar)
            if args.output:
                write_results(results, args.output)
            sys.stdout.write(summary(results))
