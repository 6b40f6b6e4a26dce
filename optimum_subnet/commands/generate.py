"""``optimum-cli subnet generate``: greedy generation with ONNX Runtime (or PyTorch) from a folder."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import check_numbers, positive, setup_logging, user_errors


class SubnetGenerateCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", required=True, help="ONNX folder (ONNX Runtime) or model folder (PyTorch)")
        parser.add_argument("--prompt", required=True)
        parser.add_argument("--max-new-tokens", type=int, default=32)
        parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="ONNX Runtime provider")
        parser.add_argument("--engine", default="generator", choices=["generator", "optimum"],
                            help="generator: fixed buffers and CUDA graphs on a --builder direct export (default); "
                                 "optimum: transformers' loop over Optimum's forward (slower; any export)")
        parser.add_argument("--no-io-binding", action="store_true", help="with --engine optimum")
        parser.add_argument("-v", "--verbose", action="store_true")

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)
        with user_errors():
            check_numbers(("--max-new-tokens", args.max_new_tokens, positive, "a positive number of tokens"))
            import sys

            from optimum_subnet.runtime.loading import generate_text

            sys.stdout.write(generate_text(args.model, args.prompt, args.max_new_tokens, provider=args.provider,
                                           use_io_binding=not args.no_io_binding, engine=args.engine) + "\n")
