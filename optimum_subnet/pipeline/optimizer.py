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

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.core.config import SubnetConfig
from optimum_subnet.core.environment import environment, package_versions
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.pipeline.memory import StagePeaks

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"


class SubnetOptimizer:
    def __init__(self, model, tokenizer, model_name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or "model"
        self.adapter = get_adapter(model.config)

    @classmethod
    def from_pretrained(cls, model_or_path, tokenizer=None, dtype: str = "float32", trust_remote_code: bool = False,
                        offload_folder: str | os.PathLike | None = None):
        """From a built-in alias (``smollm2-135m``), a local folder, a hub id, or a loaded model.
        ``offload_folder``: keep the weights memory-mapped on disk (converted to ``dtype`` there when the
        checkpoint holds another), for models larger than the RAM; combine with ``offload``."""
        if isinstance(model_or_path, (str, os.PathLike)):
            from optimum_subnet.loading import load_config, load_model

            get_adapter(load_config(str(model_or_path), trust_remote_code))  # fail fast on unsupported types
            model, loaded_tokenizer = load_model(str(model_or_path), dtype=dtype, trust_remote_code=trust_remote_code,
                                                 offload_folder=offload_folder)
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
        Started as several processes by torchrun / accelerate launch, the search's candidates are split
        across them; rank 0 writes the output, the others return the same path without writing.
        """
        from optimum_subnet.core.files import atomic_output_dir, check_output_dir
        from optimum_subnet.distributed import DistributedContext
        from optimum_subnet.pipeline.checkpoint import RunDirectory

        config.validate()
        protected = self.input_paths(config)
        check_output_dir(save_dir, overwrite, protected)  # refuse before hours of work, not after
        plan = self.preflight(config, save_dir, spec=spec, check_memory=check_memory)
        context = DistributedContext.from_environment(config.device)  # launched by torchrun / accelerate launch
        work = None
        try:
            def open_work() -> None:  # the main process alone keeps the checkpoints
                nonlocal work
                work = RunDirectory(save_dir).open(resume=resume, overwrite=overwrite)

            context.on_main(open_work)
            result = self.run(config, work=work, spec=spec, plan=plan, context=context)
            if not context.is_main:
                context.log("search done; rank 0 reforms and writes %s", save_dir)
                return Path(save_dir)
            hint = f"nothing was written to {save_dir}; the run is checkpointed: rerun with resume=True"
            with atomic_output_dir(save_dir, overwrite, staging=work.path, protected=protected, hint=hint) as tmp:
                from optimum_subnet.stages.surgery import save_subnet

                save_subnet(result["model"], self.tokenizer, result["spec"], tmp)
                config.save_pretrained(tmp)
                write_report(result["report"], tmp)
        except BaseException:
            if work is not None:
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
                  spec: SubnetSpec | None = None, check_memory: bool = True):
        """Every check that needs no data pass, so a wrong input fails in seconds, not after hours:
        device, dtype, sequence lengths, a reachable target (or a valid ``spec``), the processes of a
        distributed launch, memory, disk. Returns the memory plan (resident or offloaded; None when the
        memory check is skipped)."""
        from optimum_subnet import data as data_lib
        from optimum_subnet.distributed import environment_world_size
        from optimum_subnet.loading import resolve_device, torch_dtype
        from optimum_subnet.pipeline.memory import memory_budget, plan_memory, resident_weight_bytes

        config.validate()
        device = resolve_device(config.device)
        world = environment_world_size()
        searching = spec is None and config.method == "ours"
        if world > 1:
            if not searching:
                what = "a given spec is only reformed" if spec is not None else f"the {config.method} baseline"
                raise SubnetError(f"this run was started as {world} processes but {what} and only the search is "
                                  "spread over processes; start it as one process (without torchrun)")
            if world > config.search.population_size:
                raise SubnetError(f"this run was started as {world} processes but a search generation has at most "
                                  f"{config.search.population_size} candidates (search.population_size); start at "
                                  f"most {config.search.population_size} processes or use a larger population")
        if config.faithfulness.min_spearman is not None and searching and config.offload == "on":
            raise SubnetError("the faithfulness constraint (faithfulness.min_spearman) needs whole-model passes of "
                              'every candidate and does not run with streamed blocks; set offload="auto" or "off"')
        streamed_unsupported = streamed_search_refusal(config) if searching else None
        if streamed_unsupported is not None and config.offload == "on":
            raise SubnetError(f"{streamed_unsupported}; set offload=\"auto\" or \"off\"")
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
                       config.uses_bias_compensation, config.uses_bias_compensation,
                       config.ratio_of).check_reachable(config.target_ratio)
        else:  # scores do not change which widths exist, so zero scores test reachability exactly
            from optimum_subnet.pipeline.stages import search_space

            search_space(shape, config, [torch.zeros(shape.num_key_value_heads, shape.head_dim)] * shape.num_layers,
                         [torch.zeros(shape.intermediate_size)] * shape.num_layers)
        if world > 1 and device.startswith("cuda"):  # this process's GPU, before anything touches GPU 0
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            device = resolve_device(f"cuda:{local_rank}")
            torch.cuda.set_device(local_rank)
        plan = None
        if check_memory:
            parameter = next(self.model.parameters())
            if torch.device(device).type != parameter.device.type:
                resident = 0  # the weights still have to move there
            elif parameter.device.type == "cpu":
                resident = resident_weight_bytes(self.model)
            else:
                resident = sum(p.numel() * p.element_size() for p in self.model.parameters())
            plan = plan_memory(shape, config, dtype.itemsize, device, *memory_budget(device, resident),
                               search=searching, widest_mlp=max(len(layer.mlp_channels) for layer in spec.layers)
                               if spec is not None and spec.layers else None)
            if plan.offload and streamed_unsupported is not None:
                raise SubnetError(f"the model does not fit on the device and is streamed block by block, but "
                                  f"{streamed_unsupported}; change that setting or use a device with more memory")
            if plan.offload and searching and config.faithfulness.min_spearman is not None:
                raise SubnetError("the model does not fit on the device and is streamed block by block, but the "
                                  "faithfulness constraint (faithfulness.min_spearman) needs whole-model passes of "
                                  "every candidate; turn the constraint off or use a device with more memory")
        if save_dir is not None:
            check_disk_space(save_dir, shape, config, dtype.itemsize)
        return plan

    def run(self, config: SubnetConfig, work=None, spec: SubnetSpec | None = None, plan=None,
            context=None) -> dict[str, Any]:
        """The whole pass in memory: ``{"model", "spec", "report"}``; the stages are in :mod:`.stages`.

        ``work`` (a :class:`~.checkpoint.RunDirectory`) receives checkpoints and, when resuming,
        provides them; ``spec`` replaces the search by that subnet. ``plan`` (from :meth:`preflight`)
        says whether the weights stay in CPU memory and stream to the device block by block (without
        one: ``config.offload == "on"``). ``context``: the processes of a distributed run (rank 0 does
        everything but the search alone; the others return after the search, without a model).
        """
        from contextlib import ExitStack

        from optimum_subnet.distributed import DistributedContext

        context = context or DistributedContext()
        offload = plan.offload if plan is not None else config.offload == "on"
        with ExitStack() as stack:
            streamer = None
            if offload:
                from optimum_subnet.calibration.offload import BlockStreamer

                streamer = BlockStreamer(context.device(_device(config)))
                stack.callback(streamer.close)
            return self._run(config, work, spec, plan, context, streamer, stack)

    def _run(self, config, work, spec, plan, context, streamer, stack) -> dict[str, Any]:
        from optimum_subnet.loading import torch_dtype
        from optimum_subnet.pipeline import stages
        from optimum_subnet.pipeline.checkpoint import tensors_digest, weights_digest

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        device = context.device(_device(config))
        weights = weights_digest(self.model) if work is not None else None
        if streamer is None:
            model = self.model.to(device=device, dtype=torch_dtype(config.dtype)).eval()
        else:  # offloaded: the blocks stay in CPU memory (page-locked unless memory-mapped), the rest on the device
            from optimum_subnet.calibration.offload import head_on_device

            model = self.model.to(device="cpu", dtype=torch_dtype(config.dtype)).eval()
            pinned = streamer.pin(list(self.adapter.decoder_layers(model)))
            logger.info("Offloaded run: %s of decoder blocks in CPU memory (%s page-locked), streamed to %s one "
                        "block at a time with the next one prefetched", _bytes(sum(
                            p.numel() * p.element_size() for p in self.adapter.decoder_layers(model).parameters())),
                        _bytes(pinned), device)
            stack.enter_context(head_on_device(model, self.adapter, device))
        adapter, shape = self.adapter, self.adapter.shape(model.config)
        if spec is not None:
            spec.validate(shape)
        selector = stages.selector_for(config, spec)
        timings: dict[str, float] = {}
        peaks = StagePeaks(device)

        t = time.perf_counter()
        data = stages.load_pass_data(config, self.tokenizer, getattr(model.config, "max_position_embeddings", None),
                                     search=selector.needs_fitness)
        timings["data"] = time.perf_counter() - t
        if work is not None:
            work.check_fingerprint({
                "config": config.to_dict(),
                "model": {"name": self.model_name, "shape": shape.to_dict(), "weights": weights},
                "data": {"calibration": tensors_digest(data.calibration),
                         "fitness": tensors_digest(*(data.fitness_sets or [data.fitness])),
                         "evaluation": tensors_digest(data.evaluation),
                         **({"selection": tensors_digest(data.selection)} if data.selection is not None else {})},
                "spec": spec.key() if spec is not None else None,
                "versions": {k: v for k, v in package_versions().items()
                             if k in ("optimum-subnet", "torch", "transformers")},
            })
        run = stages.RunContext(model=model, tokenizer=self.tokenizer, adapter=adapter, shape=shape, config=config,
                                device=device, data=data, report={}, timings=timings, work=work, context=context,
                                streamer=streamer, plan=plan)

        cached = context.on_main(lambda: work.load_pre_search() if work is not None else None)
        if cached is not None:  # resumed: the stages before the search ran in an earlier process
            run.report, saved_timings, run.scores = cached
            timings.update(saved_timings)
            logger.info("Resumed: dense and initial perplexity and importance scores read from %s",
                        work.path if work is not None else "rank 0's checkpoint")
        else:
            dense_spec = SubnetSpec.dense(shape)
            run.report.update(model=self.model_name, target_ratio=config.target_ratio)
            t = time.perf_counter()
            with peaks.stage("dense evaluation"):
                dense_ppl = run.evaluate(model, "dense")
            run.report["dense"] = {"params": dense_spec.params(), "block_params": dense_spec.block_params(),
                                   "ppl": dense_ppl}
            timings["evaluate_dense"] = time.perf_counter() - t
            if selector.needs_importance:
                t = time.perf_counter()
                # rank 0 computes them for every process: all must build the same search space
                with peaks.stage("importance"):
                    run.scores = context.on_main(
                        lambda: stages.importance(model, adapter, config, data, device, streamer))
                timings["importance"] = time.perf_counter() - t
            if work is not None and spec is not None:
                work.save_pre_search(run.report, timings, run.scores)
        report = run.report

        with peaks.stage("search"):
            selection = selector.select(run)
        if not context.is_main:  # the rest (reformation, evaluation, saving) is rank 0's
            return {"model": None, "spec": selection.spec, "report": {}}
        report.update(selection.report)
        timings.update(selection.timings)
        chosen = stages.with_reformation_biases(selection.spec) if config.reformation_bias else selection.spec
        with peaks.stage("reformation"):  # the extracted subnet lives from here on, beside the dense model
            subnet = run.extract(chosen)
            if selection.adjust is not None:
                selection.adjust(subnet, adapter)
            report.setdefault("method", config.method)
            report["searched"] = {"params": chosen.params(), "inheriting_ratio": chosen.inheriting_ratio(),
                                  "ppl": run.evaluate(subnet, "searched")}
            reformation = stages.reform(model, subnet, chosen, adapter, config, data, device, streamer)
            if selection.alternatives:  # search.selection_after_reformation
                t = time.perf_counter()
                (label, chosen, subnet, reformation), report["search"]["selection_after_reformation"] = (
                    stages.reformed_choice(run, selection, subnet, reformation, device))
                timings["selection_after_reformation"] = time.perf_counter() - t
                if label != "search":  # the searched entry describes the subnet that is kept
                    report["searched"] = {"params": chosen.params(), "inheriting_ratio": chosen.inheriting_ratio(),
                                          "ppl": run.evaluate(lambda: run.extract(chosen), f"{label}, before reformation"),
                                          "chosen_after_reformation": label}
        # without a reformation nothing changed: the final subnet is the selected one
        with peaks.stage("final evaluation"):
            final_ppl = (dict(report["searched"]["ppl"]) if reformation.method == "none"
                         else run.evaluate(subnet, "final"))
        final_spec = SubnetSpec(shape=shape, layers=chosen.layers,
                                metadata={"target_ratio": config.target_ratio, "source_model": self.model_name,
                                          "seed": config.seed, "reformation": config.reformation.method,
                                          "method": config.method})
        report["subnet"] = stages.subnet_report(final_spec, final_ppl)
        report["reformation"] = stages.reformation_report(reformation)
        if config.faithfulness.prompts > 0:
            t = time.perf_counter()
            report["faithfulness"] = stages.faithfulness(model, subnet, self.tokenizer, config, data, run.forward)
            timings["faithfulness"] = time.perf_counter() - t
        report["evaluation"] = data.describe()
        report["timings"] = {**timings, "total": time.perf_counter() - started}
        report["environment"] = environment(device, config.seed)
        report["config"] = config.to_dict()
        if plan is not None or streamer is not None:
            report["memory"] = {**(plan.describe() if plan is not None else {"plan": "offload", "reason": "offload requested"}),
                                **({"streaming": streamer.describe()} if streamer is not None else {})}
        if peaks.peaks:  # measured on a CUDA device: beside the estimate's stages (a resumed run lacks the early ones)
            report.setdefault("memory", {})["measured_stage_peak_bytes"] = peaks.peaks
        return {"model": subnet, "spec": final_spec, "report": report}


def _device(config: SubnetConfig) -> str:
    from optimum_subnet.loading import resolve_device

    return resolve_device(config.device)


def _bytes(n: int) -> str:
    from optimum_subnet.core.files import human_bytes

    return human_bytes(n)


def write_report(report: dict[str, Any], folder: Path) -> None:
    from optimum_subnet.pipeline.report import plot_search, report_markdown
    from optimum_subnet.core.files import write_json

    write_json(folder / REPORT_NAME, report)
    (folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_search(report, folder / "search_progress.png")


def check_disk_space(save_dir: str | os.PathLike, shape, config: SubnetConfig, dtype_bytes: int,
                     free: int | None = None) -> None:
    """Refuse a run whose output cannot fit on the output's file system (checked before the work).

    Needed: the subnet's weights at the target ratio (plus the ratio tolerance) in the run's dtype,
    its importance scores in the work folder, and 16 MiB for tokenizer, code, reports and checkpoints.
    """
    from optimum_subnet.core.errors import ResourceError
    from optimum_subnet.core.files import human_bytes

    from optimum_subnet.algorithms.budget import Budget

    budget = Budget(shape, config.target_ratio, config.ratio_of)
    params = min(shape.dense_params(), budget.target_params + budget.slack(config.search.ratio_tolerance))
    scores = shape.num_layers * (shape.num_key_value_heads * shape.head_dim + shape.intermediate_size) * 4
    needed = int(params * dtype_bytes) + scores + 16 * 2**20
    if free is None:
        folder = Path(os.path.abspath(save_dir)).parent
        while not folder.exists():
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    if needed > free:
        raise ResourceError(f"not enough disk space for {save_dir}: the subnet needs about {human_bytes(needed)} "
                            f"but {human_bytes(free)} is free there; free some space or choose another output folder")


def streamed_search_refusal(config: SubnetConfig) -> str | None:
    """Why the search's settings cannot run with streamed blocks (an offloaded run), or None: the
    streamed fitness scores perplexity on fixed windows only."""
    s = config.search
    if s.fitness_metric != "perplexity":
        return (f'search.fitness_metric="{s.fitness_metric}" needs the dense model\'s outputs beside every '
                "candidate's and does not run with streamed blocks")
    if s.fitness_refresh:
        return "search.fitness_refresh (fresh fitness windows per generation) does not run with streamed blocks"
    if s.screening_method == "masked" and s.screening_keep < 1:
        return ('search.screening_method="masked" runs the whole dense model per candidate and does not run with '
                "streamed blocks")
    return None
