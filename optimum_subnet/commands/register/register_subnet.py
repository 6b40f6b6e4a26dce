# Registers `optimum-cli subnet ...` and `optimum-cli export subnet-onnx` with Optimum's CLI (found
# through the optimum.commands.register namespace). Kept free of torch/transformers imports: the
# commands import them inside run(). For the stock `optimum-cli onnxruntime optimize|quantize`
# commands, subnet exports are registered with Optimum's ONNX Runtime tooling on load (only when
# such a command runs, so other commands start as fast as before).
import sys

from optimum.commands.export.base import ExportCommand
from optimum.commands.subnet.base import SUBNET_ONNX_EXPORT, SubnetCommand

if len(sys.argv) > 1 and sys.argv[1] == "onnxruntime":
    from optimum.commands.subnet.common import register_for_stock_onnxruntime_commands

    register_for_stock_onnxruntime_commands()

REGISTER_COMMANDS = [SubnetCommand, (SUBNET_ONNX_EXPORT, ExportCommand)]
