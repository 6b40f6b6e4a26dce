"""``optimum-cli subnet``: the command group, and what every subcommand shares.

Subcommands only turn arguments into library configs and calls; the library never sees argparse
objects. Heavy imports (torch, transformers, optimum_subnet) happen inside ``run()`` so that
``optimum-cli`` itself starts fast.
"""

from __future__ import annotations


from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

from .evaluate import SubnetEvaluateCommand
from .explain import SubnetExplainCommand
from .search import SubnetSearchCommand


class SubnetCommand(BaseOptimumCLICommand):
    COMMAND = CommandInfo(name="subnet", help="Training-free subnet search, reformation and evaluation.")
    SUBCOMMANDS = (
        CommandInfo(name="search", help="Search and reform a subnet at a target ratio.",
                    subcommand_class=SubnetSearchCommand),
        CommandInfo(name="evaluate", help="Held-out perplexity of a dense model or a saved subnet.",
                    subcommand_class=SubnetEvaluateCommand),
        CommandInfo(name="explain", help="AtMan relevance of each prompt token for a target continuation.",
                    subcommand_class=SubnetExplainCommand),
    )
