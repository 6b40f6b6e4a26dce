# Registers `optimum-cli subnet ...` with Optimum's CLI (found through the optimum.commands.register
# namespace). Kept free of torch/transformers imports: the commands import them inside run().
from optimum.commands.subnet.base import SubnetCommand

REGISTER_COMMANDS = [SubnetCommand]
