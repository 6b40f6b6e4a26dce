"""``optimum-cli subnet``: the command group, and what every subcommand shares.

Subcommands only turn arguments into library configs and calls; the library never sees argparse
objects. Heavy imports (torch, transformers, optimum_subnet) happen inside ``run()`` so that
``optimum-cli`` itself starts fast.
"""

from __future__ import annotations


from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

from optimum.commands.subnet.benchmark import SubnetBenchmarkCommand
from optimum.commands.subnet.evaluate import SubnetEvaluateCommand
from optimum.commands.subnet.explain import SubnetExplainCommand
from optimum.commands.subnet.export import SubnetExportCommand
from optimum.commands.subnet.generate import SubnetGenerateCommand
from optimum.commands.subnet.primal import SubnetPrimalCommand
from optimum.commands.subnet.search import SubnetSearchCommand


class SubnetCommand(BaseOptimumCLICommand):
    COMMAND = CommandInfo(name="subnet", help="Training-free subnet search, reformation and evaluation.")
    SUBCOMMANDS = (
        CommandInfo(name="search", help="Search and reform a subnet at a target ratio.",
                    subcommand_class=SubnetSearchCommand),
        CommandInfo(name="evaluate", help="Held-out perplexity of a dense model or a saved subnet.",
                    subcommand_class=SubnetEvaluateCommand),
        CommandInfo(name="export", help="Export a subnet or dense model to ONNX, validated against PyTorch.",
                    subcommand_class=SubnetExportCommand),
        CommandInfo(name="generate", help="Greedy generation from an ONNX folder (ONNX Runtime) or a model folder.",
                    subcommand_class=SubnetGenerateCommand),
        CommandInfo(name="explain", help="AtMan relevance of each prompt token for a target continuation.",
                    subcommand_class=SubnetExplainCommand),
        CommandInfo(name="benchmark", help="Prefill latency, decode tokens/s and peak memory of a subnet vs its "
                                           "dense model (ONNX Runtime and PyTorch), in one run.",
                    subcommand_class=SubnetBenchmarkCommand),
        CommandInfo(name="primal", help="Primal-Attention: diagnose the attention spectrum, or replace chosen layers "
                                        "by low-rank KSVD attention with a fixed-size decoding state.",
                    subcommand_class=SubnetPrimalCommand),
    )


#: ``optimum-cli export subnet-onnx``: the same exporter, under Optimum's export command.
SUBNET_ONNX_EXPORT = CommandInfo(name="subnet-onnx", help="Export a subnet (per-layer widths) to ONNX, validated.",
                                 subcommand_class=SubnetExportCommand)
