"""Configuration of the Primal-Attention pass (``PrimalConfig``), as dataclasses that round-trip to JSON.

Defaults are sized for SmolLM2-135M on a 2-core CPU (a calibration fit of two layers in about a
minute; a 200-step fine-tune of two layers in a few minutes). Layer selectors (``layers``):

* ``last:K`` / ``first:K``: the last / first K decoder layers (the authors replace the last ones,
  where attention is closest to low rank);
* explicit indices and ranges: ``28,29`` or ``26-29``;
* ``all``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.jsonconfig import JsonConfig

CONFIG_NAME = "primal_config.json"


@dataclass
class PrimalDataConfig:
    """Calibration text (the fit and the fine-tune) and held-out text (the report's perplexities)."""

    dataset: str = "enwiki-extract"
    text_column: str = "text"
    num_samples: int = 32  # calibration windows
    seq_len: int = 256
    batch_size: int = 8
    eval_dataset: str | None = None  # default: the held-out side of ``dataset``
    eval_seq_len: int = 512
    eval_max_windows: int | None = 24  # None: every window of the held-out set
    eval_batch_size: int = 4


@dataclass
class FineTuneConfig:
    """Optional short distillation after the calibration fit (``steps = 0``: off).

    The student is the model with primal layers, the teacher the original model; the loss is the
    token-level KL divergence of the teacher's next-token distribution from the student's on the
    calibration windows, plus ``eta`` times the mean squared KSVD objective J of the primal layers
    (the paper's regularizer, eta 0.05-0.1). Only the primal layers are trained (AdamW, linear warm-up,
    cosine decay to 10%). A checkpoint is written every ``checkpoint_every`` steps, so an interrupted
    fine-tune resumes where it stopped.
    """

    steps: int = 0
    learning_rate: float = 5e-4
    batch_size: int = 2  # calibration windows per step
    #: positions per window scored by the KL (a random subset, redrawn every step; None: all). The LM
    #: head over a large vocabulary dominates a step's cost; the layers still run on every position.
    kl_tokens: int | None = None
    eta: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    log_every: int = 10


@dataclass
class DiagnoseConfig:
    """The training-free diagnosis: spectra of the attention matrices on calibration windows."""

    windows: int = 4
    seq_len: int = 256
    thresholds: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.99])


@dataclass
class PrimalConfig(JsonConfig):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    SECTIONS: ClassVar[dict[str, type]] = {"data": PrimalDataConfig, "fine_tune": FineTuneConfig,
                                           "diagnose": DiagnoseConfig}
    DESCRIPTION: ClassVar[str] = "Primal-Attention configuration"
    OPTION_PREFIX: ClassVar[str] = "Primal-Attention "

    layers: str = "last:2"
    #: s, the number of singular directions kept per head (1..head_dim)
    rank: int = 16
    #: ridge of the output projection fit, relative to the mean diagonal of the features' Gram matrix;
    #: None: chosen per layer among 1e-4..1 on every 4th calibration window, held out from the fit
    ridge: float | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    data: PrimalDataConfig = field(default_factory=PrimalDataConfig)
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "PrimalConfig":
        d, f, g = self.data, self.fine_tune, self.diagnose
        parse_selector(self.layers)  # the syntax; the range needs the model (resolve_layers)
        checks = [
            (isinstance(self.rank, int) and self.rank >= 1, f"rank must be a whole number >= 1, got {self.rank}"),
            (self.ridge is None or self.ridge >= 0, f"ridge must be >= 0, got {self.ridge}"),
            (self.dtype in ("float32", "float16", "bfloat16"), f"unknown dtype {self.dtype!r}"),
            (d.num_samples >= 1, f"calibration needs at least one sample, got {d.num_samples}"),
            (d.seq_len >= 2 and d.eval_seq_len >= 2, "sequence lengths must be at least 2 tokens"),
            (d.batch_size >= 1 and d.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (f.steps >= 0, f"fine-tune steps must be >= 0, got {f.steps}"),
            (f.learning_rate > 0, f"fine-tune learning rate must be > 0, got {f.learning_rate}"),
            (1 <= f.batch_size <= d.num_samples,
             f"fine-tune batch size must be in 1..{d.num_samples} (the calibration windows), got {f.batch_size}"),
            (f.eta >= 0, f"eta must be >= 0, got {f.eta}"),
            (f.kl_tokens is None or f.kl_tokens >= 1, f"kl_tokens must be >= 1 (or None: all), got {f.kl_tokens}"),
            (f.checkpoint_every >= 1 and f.log_every >= 1, "checkpoint and log intervals must be >= 1"),
            (f.warmup_steps >= 0 and f.grad_clip > 0, "warm-up steps must be >= 0 and the gradient clip > 0"),
            (g.windows >= 1 and g.seq_len >= 2, "the diagnosis needs at least one window of >= 2 tokens"),
            (all(0 < t <= 1 for t in g.thresholds) and len(g.thresholds) >= 1,
             f"energy thresholds must be in (0, 1], got {g.thresholds}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SubnetError(message)
        return self


# --------------------------------------------------------------------------------- selectors
_SELECTOR_HELP = "use last:K, first:K, all, or layer indices such as 28,29 or 26-29"
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_selector(selector: str):
    """The parsed form of a layer selector: ``("last", K)``, ``("first", K)``, ``("all", None)`` or
    ``("indices", [..])``. Raises a one-line error for anything else."""
    if not isinstance(selector, str) or not selector.strip():
        raise SubnetError(f"empty layer selector; {_SELECTOR_HELP}")
    text = selector.strip().lower()
    if text == "all":
        return "all", None
    for kind in ("last", "first"):
        if text.startswith(kind + ":"):
            count = text[len(kind) + 1:]
            if not count.isdigit():
                raise SubnetError(f"layer selector {selector!r}: {count!r} is not a layer count; {_SELECTOR_HELP}")
            if int(count) < 1:
                raise SubnetError(f"layer selector {selector!r} selects no layer; the count must be >= 1")
            return kind, int(count)
    indices: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise SubnetError(f"unknown layer selector {selector!r}; {_SELECTOR_HELP}")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise SubnetError(f"layer selector {selector!r}: the range {lo}-{hi} is empty")
        indices.extend(range(lo, hi + 1))
    return "indices", indices


def resolve_layers(selector: str, num_layers: int) -> list[int]:
    """Decoder layer indices (sorted, unique) that ``selector`` names in a model of ``num_layers``."""
    kind, value = parse_selector(selector)
    if kind == "all":
        return list(range(num_layers))
    if kind in ("last", "first"):
        if value > num_layers:
            raise SubnetError(f"layer selector {selector!r} asks for {value} layers but the model has {num_layers}")
        return list(range(num_layers - value, num_layers)) if kind == "last" else list(range(value))
    out_of_range = sorted(i for i in value if i >= num_layers)
    if out_of_range:
        raise SubnetError(f"layer selector {selector!r} names layer {out_of_range[0]}, but the model has layers "
                          f"0..{num_layers - 1}")
    return sorted(set(value))
