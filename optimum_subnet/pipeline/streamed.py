"""Fitness and perplexity when the model's blocks are streamed to the device (an offloaded run).

The search's candidates all cut their layers out of the same dense blocks, so :class:`StreamedFitness`
streams the dense model once for a *group* of candidates: each dense block, once on the device, is
sliced there into every candidate's version of that layer (kept rows / columns, as
:func:`~optimum_subnet.stages.surgery.extract_subnet` does), which runs that candidate's hidden states
and is dropped. Transfers then cost one pass over the weights per group instead of one per
candidate, and a candidate's perplexity is computed with the same operations, in the same order, as
:class:`~optimum_subnet.pipeline.fitness.PerplexityFitness` computes it on a resident model.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from optimum_subnet.core.errors import NonFiniteError

#: exp() of a mean NLL above this overflows float (as in ``evaluation.perplexity``)
_MAX_MEAN_NLL = 700.0


def subnet_skeleton(model, spec, adapter):
    """The subnet model with its weights on the meta device (no memory), its buffers real: each layer is
    filled with its sliced weights when its dense block arrives, and dropped after running. Its own
    rotary tables and masks (built as :func:`~optimum_subnet.stages.surgery.extract_subnet`'s subnet
    builds them, in float32) give each candidate the layer context a resident evaluation gives it."""
    from accelerate import init_empty_weights
    from transformers.modeling_utils import no_init_weights

    config = adapter.subnet_config(model, spec)
    config.dtype = model.dtype
    with init_empty_weights(include_buffers=False), no_init_weights():
        return adapter.subnet_model_class()(config)


def fill_layer(layer, dense_layer, layer_spec, shape, adapter, device) -> None:
    """Give a skeleton layer its weights, sliced from ``dense_layer`` where that block is (the device)."""
    layer.load_state_dict(adapter.slice_layer_state(dense_layer, layer_spec, shape), assign=True)
    for owner in layer.modules():  # rotary channel tables, built on the CPU
        for name, buf in owner._buffers.items():
            if buf is not None and buf.device != device:
                owner._buffers[name] = buf.to(device)


class StreamedFitness:
    """``fitness(spec) -> perplexity`` on ``windows`` with the dense blocks streamed by ``streamer``.

    ``many(specs)`` evaluates a generation in groups of ``group_size`` candidates (one stream of the
    blocks per group; the group's hidden states stay on the device). The embeddings, final norm and LM
    head must be on the device (``head_on_device``), as during the whole offloaded run.
    """

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int, streamer,
                 screening_windows: torch.Tensor | None = None, group_size: int = 1):
        self.model = model
        self.adapter = adapter
        self.windows = windows
        self.batch_size = max(1, int(batch_size))
        self.streamer = streamer
        self.screening_windows = screening_windows
        self.group_size = max(1, int(group_size))

    def __call__(self, spec) -> float:
        return self.many([spec])[0]

    def screen(self, spec) -> float:
        return self.screen_many([spec])[0]

    def many(self, specs: Sequence) -> list[float]:
        return self._perplexities(list(specs), self.windows)

    def screen_many(self, specs: Sequence) -> list[float]:
        if self.screening_windows is None:
            raise ValueError("this fitness was built without screening windows")
        return self._perplexities(list(specs), self.screening_windows)

    def _perplexities(self, specs: list, windows: torch.Tensor) -> list[float]:
        values = []
        for start in range(0, len(specs), self.group_size):
            values += self._group(specs[start: start + self.group_size], windows)
        return values

    @torch.no_grad()
    def _group(self, specs: list, windows: torch.Tensor) -> list[float]:
        model, adapter = self.model, self.adapter
        shape = adapter.shape(model.config)
        device = self.streamer.device
        batches = [batch.to(device) for batch in windows.split(self.batch_size)]
        embedded = [adapter.embed(model, batch) for batch in batches]
        states = [list(embedded) for _ in specs]
        skeletons = [subnet_skeleton(model, spec, adapter) for spec in specs]
        contexts = [[adapter.layer_context(skeleton, hidden) for hidden in embedded] for skeleton in skeletons]
        layers = [list(adapter.decoder_layers(skeleton)) for skeleton in skeletons]
        position = [{layer.source_index: i for i, layer in enumerate(spec.layers)} for spec in specs]
        needed = sorted(set().union(*(p.keys() for p in position)))
        dense_layers = adapter.decoder_layers(model)
        for k in self.streamer.stream([[dense_layers[s]] for s in needed]):
            source = needed[k]
            for c, spec in enumerate(specs):
                i = position[c].get(source)
                if i is None:  # the candidate dropped this layer: its hidden states pass unchanged
                    continue
                layer = layers[c][i]
                fill_layer(layer, dense_layers[source], spec.layers[i], shape, adapter, device)
                states[c] = [adapter.run_layer(layer, hidden, context)
                             for hidden, context in zip(states[c], contexts[c])]
                layers[c][i] = None
                adapter.decoder_layers(skeletons[c])[i] = torch.nn.Identity()  # frees the sliced weights
        return [self._perplexity(hidden_states, batches) for hidden_states in states]

    def _perplexity(self, hidden_states: list[torch.Tensor], batches: list[torch.Tensor],
                    token_chunk: int = 2048) -> float:
        """Final norm, LM head and next-token NLL in token chunks (as ``negative_log_likelihood``)."""
        total, count = 0.0, 0
        for hidden, batch in zip(hidden_states, batches):
            hidden = self.adapter.final_norm(self.model, hidden)[:, :-1]
            flat_hidden = hidden.reshape(-1, hidden.shape[-1])
            flat_targets = batch[:, 1:].reshape(-1)
            for start in range(0, flat_targets.numel(), token_chunk):
                logits = self.adapter.logits(self.model, flat_hidden[start: start + token_chunk]).float()
                total += F.cross_entropy(logits, flat_targets[start: start + token_chunk], reduction="sum").item()
            count += flat_targets.numel()
        if not math.isfinite(total):
            raise NonFiniteError("non-finite loss: the model produces NaN/inf logits on this data")
        return math.exp(min(total / count, _MAX_MEAN_NLL))
