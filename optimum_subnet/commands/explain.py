"""``optimum-cli subnet explain``: AtMan relevance of each prompt token (word, sentence) for a target."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import add_common_model_args, check_numbers, fraction, positive, setup_logging, user_errors


class SubnetExplainCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", required=True, help="subnet folder, dense folder, alias or hub id")
        parser.add_argument("--prompt", required=True, help="the input text to explain")
        parser.add_argument("--target", required=True,
                            help="the continuation whose probability is explained (mind its leading space)")
        parser.add_argument("--output", required=True,
                            help="folder for explanation.json, explanation.html and explanation.png")
        parser.add_argument("--granularity", default="token", choices=["token", "word", "sentence"],
                            help="what one suppression removes (default: token)")
        parser.add_argument("--suppression-factor", type=float, default=0.9,
                            help="f: suppressed attention scores keep (1 - f) (default 0.9)")
        parser.add_argument("--mode", default="multiplicative", choices=["multiplicative", "log_bias"],
                            help="multiplicative: the paper's row-shifted product; log_bias: additive log(1 - f)")
        parser.add_argument("--correlated", action="store_true",
                            help="also suppress tokens whose input embeddings are similar (cosine >= --kappa)")
        parser.add_argument("--kappa", type=float, default=0.6, help="cosine threshold of --correlated")
        parser.add_argument("--batch-size", type=int, default=8, help="manipulated sequences per forward pass")
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        add_common_model_args(parser)

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)
        with user_errors():
            check_numbers(
                ("--suppression-factor", args.suppression_factor, lambda v: 0 <= v <= 1, "in [0, 1]"),
                ("--kappa", args.kappa, fraction, "a cosine similarity in (0, 1]"),
                ("--batch-size", args.batch_size, positive, "a positive number of sequences per forward pass"),
            )
            import sys

            from optimum_subnet.explain import AtManConfig, AtManExplainer
            from optimum_subnet.explain.render import save_explanation
            from optimum_subnet.loading import load_model, resolve_device
            from optimum_subnet.core.files import atomic_output_dir, check_output_dir

            from optimum_subnet.core.errors import SubnetError

            if not args.target:
                raise SubnetError("the target is empty; give the continuation to explain (e.g. --target ' Paris')")
            if not args.prompt.strip():
                raise SubnetError("the prompt is empty")
            config = AtManConfig(suppression_factor=args.suppression_factor, mode=args.mode,
                                 granularity=args.granularity, correlated=args.correlated, kappa=args.kappa,
                                 batch_size=args.batch_size)
            check_output_dir(args.output, args.overwrite)
            device = resolve_device(args.device)
            model, tokenizer = load_model(args.model, dtype=args.dtype, device=device,
                                          trust_remote_code=args.trust_remote_code)
            explanation = AtManExplainer(model, tokenizer, config).explain(args.prompt, args.target)
            explanation.model = args.model
            with atomic_output_dir(args.output, args.overwrite) as tmp:
                save_explanation(explanation, tmp)
            sys.stdout.write(f"target {args.target!r}: loss {explanation.target_loss:.4f}; most relevant "
                             f"{args.granularity}s (change of the target's cross-entropy when suppressed):\n")
            for unit in explanation.top(10):
                sys.stdout.write(f"  {unit.relevance:+9.4f}  {unit.text!r}\n")
            sys.stdout.write(f"Explanation written to {args.output}\n")
