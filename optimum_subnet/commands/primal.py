"""``optimum-cli subnet primal``: Primal-Attention diagnosis (``--diagnose``) or conversion of the chosen
layers (``--layers last:2 --rank 16 [--fine-tune-steps N]``), on a dense model or a subnet."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import add_common_model_args, add_data_args, setup_logging, user_errors

class SubnetPrimalCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", default="smollm2-135m",
                            help="dense model or subnet: built-in alias (smollm2-135m), folder or hub id")
        parser.add_argument("--output", required=True, help="folder to write the model (or the diagnosis) to")
        parser.add_argument("--diagnose", action="store_true",
                            help="only measure the spectrum of every layer's and head's attention (JSON, Markdown, "
                                 "plot): which layers are candidates")
        parser.add_argument("--layers", help="layers to replace: last:K, first:K, all, or indices such as 28,29 or "
                                             "26-29 (default last:2)")
        parser.add_argument("--rank", type=int, help="s, singular directions kept per head, 1..head size (default 16)")
        parser.add_argument("--fine-tune-steps", type=int,
                            help="distil the primal layers from the original model for this many steps on the "
                                 "calibration text (default 0: calibration fit only)")
        parser.add_argument("--eta", type=float, help="weight of the KSVD regularizer in the fine-tune (default 0.1)")
        parser.add_argument("--learning-rate", type=float, help="fine-tune learning rate (default 5e-4)")
        parser.add_argument("--fine-tune-batch-size", type=int, help="calibration windows per step (default 2)")
        parser.add_argument("--kl-tokens", type=int,
                            help="score the fine-tune's KL on this many random positions per window (default: all; "
                                 "the LM head dominates a step's cost on large vocabularies)")
        parser.add_argument("--ridge", type=float, help="relative ridge of the output projection fit (default: chosen per layer on held-out "
                                 "calibration windows)")
        parser.add_argument("--config", help="a primal_config.json to start from")
        add_data_args(parser, num_samples_default=32, seq_len_default=256)
        parser.add_argument("--seed", type=int)
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (and discard "
                                                                     "an interrupted run unless --resume)")
        parser.add_argument("--resume", action="store_true",
                            help="continue the interrupted run checkpointed in OUTPUT.partial (same arguments)")
        add_common_model_args(parser)

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)

        def resume_hint() -> str:
            from optimum_subnet.primal.checkpoint import has_progress
            from optimum_subnet.pipeline.checkpoint import work_dir_for

            if not args.diagnose and has_progress(args.output):
                return f"; the checkpoint in {work_dir_for(args.output)} is kept: rerun with --resume"
            return ""

        with user_errors(resume_hint):  # translates the library's words (resume=True, ...) into flags
            import sys
            from pathlib import Path

            from optimum_subnet.core.errors import SubnetError
            from optimum_subnet.core.files import check_output_dir
            from optimum_subnet.primal import PrimalConfig, PrimalOptimizer

            if args.diagnose and (args.layers or args.rank or args.fine_tune_steps):
                raise SubnetError("--diagnose only measures the attention spectrum; leave out --layers, --rank and "
                                  "--fine-tune-steps (or --diagnose)")
            inputs = [args.model, args.calibration_dataset, args.eval_dataset, args.config]
            check_output_dir(args.output, args.overwrite, protected=[p for p in inputs if p and Path(p).exists()])
            config = PrimalConfig.from_pretrained(args.config) if args.config else PrimalConfig()
            config = config.replace(
                layers=args.layers, rank=args.rank, ridge=args.ridge, seed=args.seed, device=args.device,
                dtype=args.dtype, data__dataset=args.calibration_dataset, data__eval_dataset=args.eval_dataset,
                data__text_column=args.text_column, data__num_samples=args.num_samples, data__seq_len=args.seq_len,
                data__eval_seq_len=args.eval_seq_len, data__eval_max_windows=args.eval_max_windows,
                fine_tune__steps=args.fine_tune_steps, fine_tune__eta=args.eta,
                fine_tune__learning_rate=args.learning_rate, fine_tune__batch_size=args.fine_tune_batch_size,
                fine_tune__kl_tokens=args.kl_tokens,
                diagnose__seq_len=args.seq_len)
            optimizer = PrimalOptimizer.from_pretrained(args.model, dtype=args.dtype,
                                                        trust_remote_code=args.trust_remote_code)
            if args.diagnose:
                path = optimizer.diagnose(config, args.output, overwrite=args.overwrite)
                sys.stdout.write((path / "spectrum.md").read_text())
                sys.stdout.write(f"\nAttention spectrum written to {path}\n")
                return
            path = optimizer.optimize(config, args.output, overwrite=args.overwrite, resume=args.resume)
            sys.stdout.write((path / "primal_report.md").read_text())
            sys.stdout.write(f"\nModel with Primal-Attention layers written to {path}\n")
