"""Helpers shared by the subnet subcommands (no heavy imports here)."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

logger = logging.getLogger("optimum_subnet.cli")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in ("matplotlib", "PIL", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def user_errors():
    """Turn library errors into one line on stderr and a non-zero exit (no traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except Exception as e:  # only SubnetError is a user error; anything else is a bug and keeps its traceback
        from optimum_subnet.errors import SubnetError

        if isinstance(e, SubnetError):
            sys.stderr.write(f"error: {e}\n")
            sys.exit(e.exit_code)
        raise


def add_common_model_args(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow code shipped with the model to run (off by default)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def register_for_stock_onnxruntime_commands() -> None:
    """Let ``optimum-cli onnxruntime optimize|quantize`` load subnet exports (config + model type)."""
    try:
        import optimum_subnet  # noqa: F401  registers subnet_llama with AutoConfig and Optimum's ORT tools
    except ImportError as e:  # pragma: no cover - a broken install should not break the stock commands
        logger.warning("optimum-subnet could not register with the onnxruntime commands: %s", e)
