"""``optimum-cli subnet export`` (also ``optimum-cli export subnet-onnx``): ONNX export, validated."""

from __future__ import annotations

from optimum.commands.base import BaseOptimumCLICommand

from optimum.commands.subnet.common import check_numbers, positive, setup_logging, user_errors


class SubnetExportCommand(BaseOptimumCLICommand):
    @staticmethod
    def parse_args(parser) -> None:
        parser.add_argument("--model", required=True, help="subnet or dense model folder, alias or hub id")
        parser.add_argument("--output", required=True, help="ONNX folder to write")
        parser.add_argument("--task", default="text-generation-with-past",
                            choices=["text-generation-with-past", "text-generation"])
        parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="fp16 needs --device cuda")
        parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (export and validation device)")
        parser.add_argument("--builder", choices=["direct", "torch"],
                            help="direct: the decoder graph written from the weights (GroupQueryAttention, shared KV "
                                 "buffer; what `subnet generate/benchmark --provider cuda` run fast; the default where "
                                 "the family supports it); torch: Optimum's exporter (slower decode path)")
        parser.add_argument("--fuse-attention", action="store_true",
                            help="with --builder torch: rewrite attention into com.microsoft::GroupQueryAttention")
        parser.add_argument("--atol", type=float, help="validation tolerance (default 1e-3 fp32, 5e-2 fp16)")
        parser.add_argument("--opset", type=int)
        parser.add_argument("--no-validation", action="store_true", help="skip the PyTorch comparison")
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        parser.add_argument("--trust-remote-code", action="store_true")
        parser.add_argument("-v", "--verbose", action="store_true")

    def run(self) -> None:
        args = self.args
        setup_logging(args.verbose)
        with user_errors():
            import math

            check_numbers(
                ("--atol", args.atol, lambda v: math.isfinite(v) and v > 0, "a positive finite tolerance"),
                ("--opset", args.opset, positive, "a positive ONNX opset number"),
            )
            import sys

            from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx, read_validation

            config = OnnxExportConfig(task=args.task, dtype=args.dtype, device=args.device, opset=args.opset,
                                      atol=args.atol, validate=not args.no_validation,
                                      fuse_attention=args.fuse_attention, builder=args.builder)
            path = export_onnx(args.model, args.output, config, overwrite=args.overwrite,
                               trust_remote_code=args.trust_remote_code)
            report = read_validation(path)
            if report.get("builder") == "direct":
                build = report["build"]
                sys.stdout.write(f"direct graph: {build['layers']} layers, {build['nodes']} nodes, rotary "
                                 f"{build['rotary']}, built in {build['seconds']:.1f} s\n")
            for key in ("direct", "unfused", "fused"):
                if key in report:
                    sys.stdout.write(f"{key} graph: max |ONNX - PyTorch| = {report[key]['max_abs_diff']:.3g} "
                                     f"(atol {report[key]['atol']:g}, {report[key]['provider']})\n")
            if "fusion" in report:
                sys.stdout.write(f"GroupQueryAttention layers: {report['fusion']['rotary']}\n")
            sys.stdout.write(f"ONNX model written to {path}\n")
