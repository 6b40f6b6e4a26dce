"""The Primal-Attention pass: diagnosis, or conversion (calibration fit, optional fine-tune, held-out
perplexity, saving), on a dense model or a subnet. ``PrimalOptimizer`` mirrors ``SubnetOptimizer``:
``from_pretrained(model)`` then ``optimize(config, output)`` / ``diagnose(config, output)``; the
in-memory steps are ``convert(config)``.

Every check that needs no data (family, layer selector, rank against each layer's head size,
output folder) runs before any work, so bad input fails in seconds with nothing written.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from optimum_subnet.core.files import atomic_output_dir, check_output_dir, write_json
from optimum_subnet.core.progress import progress_bar
from optimum_subnet.primal.checkpoint import PrimalRunDirectory
from optimum_subnet.primal.config import PrimalConfig
from optimum_subnet.primal.convert import (
    SuffixRunner,
    check_supported,
    config_entry,
    detached_primal,
    fit_primal_layers,
    mark_converted,
    plan_layers,
)
from optimum_subnet.primal.save import as_primal_model, save_primal

logger = logging.getLogger(__name__)


class PrimalOptimizer:
    def __init__(self, model, tokenizer, model_name: str | None = None):
        check_supported(model.config)
        self.model, self.tokenizer = model, tokenizer
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or "model"
        from optimum_subnet.families import get_adapter_for_subnet

        self.adapter = get_adapter_for_subnet(model.config)

    @classmethod
    def from_pretrained(cls, model_or_path, dtype: str = "float32", trust_remote_code: bool = False):
        """Load a dense model or a saved subnet (alias, folder or hub id); the family is checked from
        its config before any weights are read."""
        from optimum_subnet.loading import load_config, load_model

        check_supported(load_config(str(model_or_path), trust_remote_code))
        model, tokenizer = load_model(str(model_or_path), dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, str(model_or_path))

    # -------------------------------------------------------------------------------- checks
    def plan(self, config: PrimalConfig) -> dict[int, int]:
        """``{layer: rank}`` the config asks for on this model (one-line errors when it cannot)."""
        config.validate()
        return plan_layers(self.model.config, config.layers, config.rank)

    def _device(self, config: PrimalConfig) -> str:
        from optimum_subnet.loading import resolve_device, torch_dtype

        device = resolve_device(config.device)
        self.model.to(device=device, dtype=torch_dtype(config.dtype))
        return device

    def _windows(self, config: PrimalConfig, calibration: tuple[int, int], evaluation: bool = True):
        from optimum_subnet import data as data_lib

        d = config.data
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for length in (calibration[1], d.eval_seq_len if evaluation else calibration[1]):
            data_lib.check_sequence_length(length, limit)
        stream = data_lib.tokenize_stream(data_lib.load_texts(d.dataset, "calibration", d.text_column), self.tokenizer)
        windows = data_lib.calibration_windows(stream, calibration[0], calibration[1], config.seed)
        if not evaluation:
            return windows, None
        eval_name = d.eval_dataset or d.dataset
        eval_stream = data_lib.tokenize_stream(data_lib.load_texts(eval_name, "evaluation", d.text_column),
                                               self.tokenizer)
        return windows, data_lib.evaluation_windows(eval_stream, d.eval_seq_len, d.eval_max_windows)

    # ----------------------------------------------------------------------------- diagnosis
    def diagnose(self, config: PrimalConfig, save_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the attention-spectrum report (``spectrum.json`` / ``.md`` / ``.png``) to ``save_dir``."""
        from optimum_subnet import data as data_lib
        from optimum_subnet.primal.diagnose import attention_spectra, candidates, write_diagnosis

        config.validate()
        check_output_dir(save_dir, overwrite, protected=self._inputs(config))
        device = self._device(config)
        g = config.diagnose
        windows, _ = self._windows(config, (g.windows, g.seq_len), evaluation=False)
        start = time.perf_counter()
        with progress_bar(len(windows), "attention spectra", unit="window") as bar:
            report = attention_spectra(self.model, windows, g.thresholds, progress=bar)
        report = {"model": self.model_name, "model_type": self.model.config.model_type,
                  "data": data_lib.describe(config.data.dataset), "windows": g.windows, "seq_len": g.seq_len,
                  "thresholds": g.thresholds, "device": device, "seconds": round(time.perf_counter() - start, 1),
                  **report}
        report["candidates"] = candidates(report, g.thresholds[0])
        with atomic_output_dir(save_dir, overwrite, protected=self._inputs(config)) as tmp:
            write_diagnosis(report, tmp)
            config.save_pretrained(tmp)
        logger.info("Attention spectrum written to %s (lowest-rank layers: %s)", save_dir,
                    ", ".join(map(str, report["candidates"][:4])))
        return Path(save_dir)

    # ---------------------------------------------------------------------------- conversion
    def convert(self, config: PrimalConfig, work: PrimalRunDirectory | None = None) -> dict[str, Any]:
        """Replace the planned layers in ``self.model`` (in place) and return ``{"model", "report"}``:
        calibration fit, optional fine-tune, held-out perplexity before / after each."""
        from optimum_subnet import data as data_lib
        from optimum_subnet.pipeline.checkpoint import tensors_digest, weights_digest
        from optimum_subnet.core.environment import package_versions

        plan = self.plan(config)
        device = self._device(config)
        d, f = config.data, config.fine_tune
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        calibration, evaluation = self._windows(config, (d.num_samples, d.seq_len))
        torch.manual_seed(config.seed)
        if work is not None:
            work.check_fingerprint({
                "config": {k: v for k, v in config.to_dict().items() if k != "diagnose"},
                "model": weights_digest(self.model), "data": tensors_digest(calibration, evaluation),
                "versions": {k: package_versions().get(k) for k in ("torch", "transformers")}})
        start = min(plan)
        runner = SuffixRunner(self.model, self.adapter, start, device)
        base_params = sum(p.numel() for p in self.model.parameters())
        cal_states = runner.prefix(calibration, d.batch_size)
        eval_states = runner.prefix(evaluation, d.eval_batch_size)
        timings["prefix_s"] = time.perf_counter() - clock

        saved = work.load_fit() if work is not None else None
        layers = self.adapter.decoder_layers(self.model)
        if saved is not None:
            tensors, report = saved
            originals = {i: layers[i].self_attn for i in plan}
            for index, rank in plan.items():
                primal = detached_primal(originals[index], self.model.config.hidden_size, index, rank)
                primal.load_state_dict({k.split(".", 2)[2]: v for k, v in tensors.items()
                                        if k.startswith(f"layers.{index}.")}, assign=False)
                layers[index].self_attn = primal.to(device)
            logger.info("Calibration fit restored from %s", work.path)
        else:
            report = {"model": self.model_name, "base_model_type": self.model.config.model_type,
                      "layers": sorted(plan), "rank": config.rank,
                      "data": {"calibration": f"{d.num_samples} x {d.seq_len} tokens of {data_lib.describe(d.dataset)}",
                               "evaluation": f"{evaluation.shape[0]} x {evaluation.shape[1]} tokens of "
                                             f"{data_lib.describe(d.eval_dataset or d.dataset)} (held out)"}}
            clock = time.perf_counter()
            with progress_bar(len(eval_states), "base perplexity", unit="batch") as bar:
                report["perplexity"] = {"base": runner.perplexity(eval_states, evaluation, progress=bar)}
            timings["base_eval_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with progress_bar(len(plan), "calibration fit", unit="layer") as bar:
                originals, fits = fit_primal_layers(self.model, self.adapter, plan, cal_states, start, config.ridge,
                                                    progress=bar)
            timings["fit_s"] = time.perf_counter() - clock
            report["fit"] = [fit.to_dict() for fit in fits]
            clock = time.perf_counter()
            with progress_bar(len(eval_states), "perplexity after the fit", unit="batch") as bar:
                report["perplexity"]["fit"] = runner.perplexity(eval_states, evaluation, progress=bar)
            timings["fit_eval_s"] = time.perf_counter() - clock
            report["timings"] = dict(timings)
            if work is not None:
                work.save_fit(_primal_tensors(layers, plan), report)
        logger.info("Held-out perplexity: base %.3f, after the calibration fit %.3f", report["perplexity"]["base"],
                    report["perplexity"]["fit"])

        if f.steps > 0:
            report = self._fine_tune(config, plan, originals, cal_states, start, device, evaluation, eval_states,
                                     runner, report, work)
        mark_converted(self.model, plan)
        as_primal_model(self.model)
        report["parameters"] = {"base": base_params, "primal": sum(p.numel() for p in self.model.parameters())}
        report["decoding_state"] = decoding_state(self.model, plan)
        report["config"] = config.to_dict()
        return {"model": self.model, "report": report}

    def _fine_tune(self, config, plan, originals, cal_states, start, device, evaluation, eval_states, runner,
                   report, work) -> dict:
        from optimum_subnet.primal.finetune import Distiller, FineTuneState

        f = config.fine_tune
        distiller = Distiller(self.model, self.adapter, originals, start, device)
        resume = None
        saved = work.load_finetune() if work is not None else None
        if saved is not None:
            tensors, data = saved
            resume = FineTuneState(step=data["step"], tensors=tensors, log=data["log"], window=data.get("window", {}))

        def checkpoint(state: FineTuneState) -> None:
            work.save_finetune(state.tensors, {"step": state.step, "log": state.log, "window": state.window})

        clock = time.perf_counter()
        with progress_bar(f.steps, "primal fine-tune", unit="step") as bar:
            log = distiller.train(cal_states, f, config.seed, resume=resume,
                                  checkpoint=checkpoint if work is not None else None, progress=bar)
        report.setdefault("timings", {})["fine_tune_s"] = time.perf_counter() - clock
        report["fine_tune"] = {"steps": f.steps, "log": log,
                               "seconds_per_step": report["timings"]["fine_tune_s"] / max(1, f.steps
                                                                                         - (resume.step if resume else 0))}
        with progress_bar(len(eval_states), "perplexity after the fine-tune", unit="batch") as bar:
            report["perplexity"]["fine_tuned"] = runner.perplexity(eval_states, evaluation, progress=bar)
        logger.info("Held-out perplexity after %d fine-tune steps: %.3f", f.steps, report["perplexity"]["fine_tuned"])
        return report

    def optimize(self, config: PrimalConfig, save_dir: str | os.PathLike, overwrite: bool = False,
                 resume: bool = False) -> Path:
        """Convert and save to ``save_dir`` (atomically: the folder appears only when complete). An
        interrupted run keeps its checkpoints in ``<save_dir>.partial`` to be resumed."""
        self.plan(config)  # bad input fails before anything is created
        protected = self._inputs(config)
        check_output_dir(save_dir, overwrite, protected=protected)
        work = PrimalRunDirectory(save_dir).open(resume=resume, overwrite=overwrite)
        try:
            result = self.convert(config, work)
            extra = []
            source = Path(str(self.model_name))
            if (source / "subnet_config.json").is_file():
                extra.append(source / "subnet_config.json")
            with atomic_output_dir(save_dir, overwrite, staging=work.path, protected=protected) as tmp:
                save_primal(result["model"], self.tokenizer, tmp, extra_files=extra)
                config.save_pretrained(tmp)
                write_report(result["report"], tmp)
        except BaseException:
            work.close(remove=not work.has_progress())
            raise
        work.close(remove=True)
        logger.info("Saved the model with Primal-Attention layers to %s", save_dir)
        return Path(save_dir)

    def _inputs(self, config: PrimalConfig) -> list[Path]:
        from optimum_subnet.core.files import cache_dir
        from optimum_subnet.loading import BUILTIN_MODELS

        paths = [cache_dir() / "models" / self.model_name] if self.model_name in BUILTIN_MODELS else []
        for name in (self.model_name, config.data.dataset, config.data.eval_dataset):
            if name and Path(name).exists():
                paths.append(Path(name))
        return paths


def _primal_tensors(layers, plan) -> dict[str, torch.Tensor]:
    return {f"layers.{i}.{name}": t for i in plan for name, t in layers[i].self_attn.state_dict().items()}


def decoding_state(model, plan: dict[int, int]) -> dict[str, Any]:
    """What decoding keeps per sequence in the primal layers (fixed) against the KV cache they no
    longer have (per token of context), in bytes at the model's dtype (the running sums are float32)."""
    layers = model.model.layers
    kv_per_token = 0
    state = 0
    windows = {}
    dtype_bytes = next(model.parameters()).element_size()
    for index in plan:
        module = layers[index].self_attn
        kv_per_token += 2 * module.num_key_value_heads * module.head_dim * dtype_bytes
        state += (module.num_heads + module.num_key_value_heads) * module.head_dim * 4
        if module.is_sliding or module.sliding_window:  # that layer's KV cache stopped growing at its window
            windows[index] = module.sliding_window
    out = {"kv_cache_bytes_saved_per_token": kv_per_token, "primal_state_bytes": state,
           "primal_layers": sorted(plan)}
    if windows:
        out["sliding_windows"] = windows
    return out


def write_report(report: dict, folder: Path) -> None:
    write_json(folder / "primal_report.json", report)
    (folder / "primal_report.md").write_text(render_report(report), encoding="utf-8")


def render_report(report: dict) -> str:
    ppl = report["perplexity"]
    lines = [f"# Primal-Attention on {report['model']}", "",
             f"Layers {', '.join(map(str, report['layers']))} replaced at rank {report['rank']}; calibration: "
             f"{report['data']['calibration']}; evaluation: {report['data']['evaluation']}.", "",
             "| model | held-out perplexity |", "|---|---:|",
             f"| base ({report['base_model_type']}) | {ppl['base']:.3f} |",
             f"| primal, calibration fit | {ppl['fit']:.3f} |"]
    if "fine_tuned" in ppl:
        lines.append(f"| primal, + {report['fine_tune']['steps']}-step fine-tune | {ppl['fine_tuned']:.3f} |")
    lines += ["", "| layer | rank | kernel energy kept (mean over heads) | output residual | KSVD J |",
              "|---:|---:|---:|---:|---:|"]
    for fit in report["fit"]:
        kept = sum(fit["kernel_energy_kept"]) / len(fit["kernel_energy_kept"])
        lines.append(f"| {fit['layer']} | {fit['rank']} | {kept:.1%} | {fit['output_residual']:.4f} | "
                     f"{fit['ksvd_objective']:.1e} |")
    if "decoding_state" in report:
        s = report["decoding_state"]
        lines += ["", f"Decoding: the primal layers keep {s['primal_state_bytes']:,} bytes per sequence (running "
                      f"sums) instead of {s['kv_cache_bytes_saved_per_token']:,} bytes of KV cache per token of "
                      "context."]
        if s.get("sliding_windows"):
            lines.append(f"Layers {', '.join(map(str, s['sliding_windows']))} attended within a sliding window: their "
                         "KV cache stopped growing at the window (the saving per token holds up to it).")
    return "\n".join(lines) + "\n"


__all__ = ["PrimalOptimizer", "config_entry", "decoding_state", "render_report", "write_report"]
