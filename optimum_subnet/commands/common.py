"""Helpers shared by the subnet subcommands (no heavy imports here)."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

logger = logging.getLogger("optimum_subnet.cli")


def setup_logging(verbose: bool = False) -> None:
    """Log lines with the time; under torchrun / accelerate launch (``WORLD_SIZE`` > 1) each line names its
    process, and the processes other than rank 0 report only what they do themselves (their share of the
    search) and warnings, not a copy of rank 0's log."""
    import os

    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    distributed = world.isdigit() and int(world) > 1
    prefix = f"[rank {rank}/{world}] " if distributed else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    if distributed and rank != "0":
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.levelno >= logging.WARNING
                              or record.name.startswith("optimum_subnet.distributed"))
    for noisy in ("matplotlib", "PIL", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Terminated(BaseException):
    """SIGTERM (a scheduler's or ``kill``'s request to stop), raised so that cleanup code runs."""


def _raise_terminated(_signum, _frame):
    raise Terminated()


#: Library messages name what a Python caller passes (keyword arguments, config fields); the CLI says the same
#: with the flags its user typed. Longer phrases first.
CLI_TERMS = (
    ('reformation.method="none"', "--reformation none"),
    ("faithfulness.prompts = 0", "--faithfulness-prompts 0"),
    ("trust_remote_code=True", "--trust-remote-code"),
    ("fuse_attention=True", "--fuse-attention"),
    ('task "text-generation-with-past"', "--task text-generation-with-past"),
    ('builder="torch"', "--builder torch"),
    ('builder="direct"', "--builder direct"),
    ('dtype="fp16"', "--dtype fp16"),
    ('engine="optimum"', "--engine optimum"),
    ("max_new_tokens", "--max-new-tokens"),
    ("overwrite=True", "--overwrite"),
    ("resume=True", "--resume"),
    ('device="cpu"', "--device cpu"),
    ('device="cuda"', "--device cuda"),
    ('provider="cpu"', "--provider cpu"),
    ('provider="cuda"', "--provider cuda"),
    ('dtype="fp32"', "--dtype fp32"),
    ('search.attention_pruning = "in_head"', "--attention-pruning in_head"),
    ('search.attention_pruning = "none"', "--attention-pruning none"),
    ('offload="auto" or "off"', "--offload auto or off"),
    ("faithfulness.min_spearman", "--min-faithfulness"),
    ("search.population_size", "--population"),
    ("offload_folder", "--offload-folder"),
    ("data.num_samples", "--num-samples"),
    ("data.eval_seq_len", "--eval-seq-len"),
    ("data.seq_len", "--seq-len"),
    ("data.eval_dataset / evaluation", "--eval-dataset / evaluate"),
    ("another output folder", "another --output"),
    ("a smaller dtype", "a smaller --dtype"),
)


def cli_terms(message: str) -> str:
    """A library error message in the command line's words."""
    for library, cli in CLI_TERMS:
        message = message.replace(library, cli)
    return message


@contextmanager
def user_errors(interrupted_hint=None):
    """Turn library errors into one line on stderr and a non-zero exit (no traceback).

    Ctrl-C and SIGTERM unwind normally (so partial outputs are removed) and exit with 130 / 143;
    ``interrupted_hint()`` may add what the user can do next (e.g. resume).
    """
    import signal

    def hint() -> str:
        return interrupted_hint() if interrupted_hint is not None else ""

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write(f"error: interrupted{hint()}\n")
        sys.exit(130)
    except Terminated:
        sys.stderr.write(f"error: terminated{hint()}\n")
        sys.exit(143)
    except Exception as e:  # only SubnetError is a user error; anything else is a bug and keeps its traceback
        from optimum_subnet.core.errors import SubnetError

        if isinstance(e, SubnetError):
            sys.stderr.write(f"error: {cli_terms(str(e))}\n")
            sys.exit(e.exit_code)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_numbers(*checks) -> None:
    """Refuse meaningless numeric options before any work, naming the flag the user typed.

    Each check is ``(flag, value, ok, what)``: ``value`` None means the option was not given; ``ok`` is
    a predicate (NaN fails every comparison, so it is refused too); the message reads
    ``FLAG must be WHAT, got VALUE``. The library validates its own arguments again, in its terms.
    """
    from optimum_subnet.core.errors import SubnetError

    for flag, value, ok, what in checks:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is not None and not ok(v):
                raise SubnetError(f"{flag} must be {what}, got {v}")


def positive(v) -> bool:
    return v > 0


def non_negative(v) -> bool:
    return v >= 0


def fraction(v) -> bool:
    """In (0, 1]."""
    return 0 < v <= 1


def add_common_model_args(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow code shipped with the model to run (off by default)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_data_args(parser, *, num_samples_default: int | None = None, seq_len_default: int | None = None) -> None:
    """The calibration / held-out data options shared by ``subnet search`` and ``subnet primal``."""
    def default(value):
        return f" (default {value})" if value is not None else ""

    parser.add_argument("--calibration-dataset", help="enwiki-extract (built in), a .txt/.jsonl file or folder, "
                                                      "or an HF dataset name")
    parser.add_argument("--eval-dataset", help="held-out data (default: the other side of the calibration set)")
    parser.add_argument("--text-column", help="column holding the text in .jsonl / HF datasets")
    parser.add_argument("--num-samples", type=int, help="calibration windows" + default(num_samples_default))
    parser.add_argument("--seq-len", type=int, help="tokens per calibration window" + default(seq_len_default))
    parser.add_argument("--eval-seq-len", type=int)
    parser.add_argument("--eval-max-windows", type=int)


def register_for_stock_onnxruntime_commands() -> None:
    """Let ``optimum-cli onnxruntime optimize|quantize`` load subnet exports (config + model type)."""
    try:
        import optimum_subnet  # noqa: F401  registers subnet_llama with AutoConfig and Optimum's ORT tools
    except ImportError as e:  # pragma: no cover - a broken install should not break the stock commands
        logger.warning("optimum-subnet could not register with the onnxruntime commands: %s", e)
