"""Short fine-tune of the primal layers: distillation from the original model on the calibration text.

Student: the model with its primal layers; teacher: the same model with the original attention
modules swapped back in (no second copy of the model). Only the primal layers' parameters train.
Loss per step (``FineTuneConfig``)::

    KL(p_teacher || p_student) per token  +  eta * mean over layers and sequences of J^2

(J: the KSVD objective, :func:`~optimum_subnet.algorithms.primal.ksvd_objective`; the paper's
``loss = task + eta * J^2``, Sec. 4.2). Both models share every layer before the first primal one,
so those run once for all calibration windows (:class:`~optimum_subnet.primal.convert.SuffixRunner`);
a step runs only the layers from there on.

Resumable: the batch of step ``t`` is drawn from a generator seeded with ``(seed, t)``, the learning
rate is a function of ``t``, so the state after step ``t`` is the trainable weights and AdamW's
moments, which :class:`FineTuneState` saves (safetensors + JSON, written atomically).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from optimum_subnet.core.errors import NonFiniteError
from optimum_subnet.primal.config import FineTuneConfig
from optimum_subnet.primal.convert import SuffixRunner
from optimum_subnet.primal.modeling_primal import PrimalAttention

logger = logging.getLogger(__name__)


@dataclass
class FineTuneState:
    """Everything a resumed fine-tune needs: the step reached, the trainable tensors, AdamW's state
    and the loss log."""

    step: int
    tensors: dict[str, torch.Tensor]
    log: list[dict] = field(default_factory=list)
    #: sums of the losses since the last log entry (so a resumed run logs the same averages)
    window: dict = field(default_factory=dict)


def learning_rate(config: FineTuneConfig, step: int) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to 10% of it at the last step."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_indices(seed: int, step: int, count: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(count, generator=generator)[:size]


class Distiller:
    """Distils the original attention layers (``originals``, by layer index) into the primal layers
    that replaced them in ``model``."""

    def __init__(self, model, adapter, originals: dict[int, nn.Module], start: int, device):
        self.model, self.adapter, self.originals = model, adapter, originals
        layers = adapter.decoder_layers(model)
        self.primals: dict[int, PrimalAttention] = {i: layers[i].self_attn for i in originals}
        self.runner = SuffixRunner(model, adapter, start, device)
        self.parameters = {f"layers.{i}.{name}": p for i, m in self.primals.items() for name, p in m.named_parameters()}

    def _use(self, which: str) -> None:
        layers = self.adapter.decoder_layers(self.model)
        for index in self.originals:
            layers[index].self_attn = self.originals[index] if which == "teacher" else self.primals[index]

    def loss(self, hidden: torch.Tensor, eta: float, positions: torch.Tensor | None = None):
        """``(loss, kl, mean J^2)`` for one batch of prefix hidden states; the KL over ``positions``
        (default: every position that predicts a next token)."""
        head = self.model.get_output_embeddings()

        def logits(h):
            h = h[:, :-1]
            return head(h if positions is None else h[:, positions.to(h.device)]).float()

        try:
            self._use("teacher")
            with torch.no_grad():
                teacher = F.log_softmax(logits(self.runner.run(hidden)), dim=-1)
        finally:
            self._use("student")
        for module in self.primals.values():
            module.record_ksvd = True
        try:
            student = F.log_softmax(logits(self.runner.run(hidden)), dim=-1)
            ksvd = torch.stack([m.last_ksvd for m in self.primals.values()]).pow(2).mean()
        finally:
            for module in self.primals.values():
                module.record_ksvd = False
                module.last_ksvd = None
        kl = (teacher.exp() * (teacher - student)).sum(-1).mean()
        return kl + eta * ksvd, float(kl.detach()), float(ksvd.detach())

    def state_tensors(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        tensors = {name: p.detach().clone() for name, p in self.parameters.items()}
        names = {id(p): name for name, p in self.parameters.items()}
        for p, state in optimizer.state.items():
            name = names[id(p)]
            for key, value in state.items():
                tensors[f"optimizer.{name}.{key}"] = torch.as_tensor(value).detach().clone()
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            for name, p in self.parameters.items():
                p.copy_(tensors[name])
        for name, p in self.parameters.items():
            prefix = f"optimizer.{name}."
            state = {key[len(prefix):]: value.to(p.device) for key, value in tensors.items()
                     if key.startswith(prefix) and "." not in key[len(prefix):]}
            if state:
                optimizer.state[p] = state

    def train(self, states: list[torch.Tensor], config: FineTuneConfig, seed: int,
              resume: FineTuneState | None = None, checkpoint: Callable[[FineTuneState], None] | None = None,
              progress=None) -> list[dict]:
        """Run ``config.steps`` steps (from ``resume.step`` when given); returns the loss log."""
        hidden_all = torch.cat(states)
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = list(self.parameters.values())
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        step, log = 0, []
        window = {"loss": 0.0, "kl": 0.0, "ksvd": 0.0, "n": 0}
        if resume is not None:
            self.load_state_tensors(resume.tensors, optimizer)
            step, log = resume.step, list(resume.log)
            window.update(resume.window)
            logger.info("Resuming the fine-tune at step %d of %d", step, config.steps)
        if progress is not None:
            progress.update(step)
        try:
            while step < config.steps:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                index = batch_indices(seed, step, hidden_all.shape[0], config.batch_size)
                positions = None
                if config.kl_tokens is not None and config.kl_tokens < hidden_all.shape[1] - 1:
                    positions = batch_indices(seed + 1, step, hidden_all.shape[1] - 1, config.kl_tokens).sort().values
                loss, kl, ksvd = self.loss(hidden_all[index.to(hidden_all.device)], config.eta, positions)
                if not math.isfinite(loss.item()):
                    raise NonFiniteError(f"the fine-tune loss became non-finite at step {step}; lower the "
                                         "learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                step += 1
                for key, value in (("loss", loss.item()), ("kl", kl), ("ksvd", ksvd)):
                    window[key] += value
                window["n"] += 1
                if step % config.log_every == 0 or step == config.steps:
                    n = window.pop("n")
                    log.append({"step": step, **{k: v / n for k, v in window.items()},
                                "lr": learning_rate(config, step - 1)})
                    logger.debug("fine-tune step %d: %s", step, log[-1])
                    window = {"loss": 0.0, "kl": 0.0, "ksvd": 0.0, "n": 0}
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(kl=f"{kl:.4f}", ksvd=f"{ksvd:.2e}")
                if checkpoint is not None and (step % config.checkpoint_every == 0) and step < config.steps:
                    checkpoint(FineTuneState(step, self.state_tensors(optimizer), list(log), dict(window)))
        finally:
            for p in params:
                p.requires_grad_(False)
        return log
