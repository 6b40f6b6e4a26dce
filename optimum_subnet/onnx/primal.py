"""ONNX export of models with Primal-Attention layers: the fixed-size decoding state as past / present.

A primal layer keeps no keys and values: its decoding state is two running sums (queries:
``(batch, heads, head_dim)``, keys: ``(batch, kv_heads, head_dim)``, float32 whatever the export dtype,
see ``optimum_subnet.primal.modeling_primal``). The exported graph carries them as

    past_key_values.{i}.query_sum / past_key_values.{i}.key_sum   ->   present.{i}.query_sum / present.{i}.key_sum

(only the batch axis is dynamic), while every other layer keeps ``past_key_values.{i}.key / .value``
with its own shape. All-zero sums are the state before the first token, so a prefill feeds zeros.

Three pieces on top of the family's per-layer export config (:mod:`optimum_subnet.onnx.config`):

* :class:`PrimalStateGenerator`: dummy past with each layer's state or KV shape;
* the config's inputs / outputs (:func:`primal_onnx_config`) name the state tensors of primal layers;
* its model patcher builds the transformers cache the model decodes with from those flat inputs
  (:class:`PrimalExportCache`: ``PrimalStateLayer`` at the primal indices, whose position count is
  the traced past length ``attention_mask`` length - ``input_ids`` length, so positions and masks stay
  dynamic even when layer 0 is a primal layer) and returns the states in the same layout.
"""

from __future__ import annotations

import functools
import inspect
from functools import lru_cache

from optimum.utils import DEFAULT_DUMMY_SHAPES
from transformers.cache_utils import DynamicCache, DynamicLayer

from optimum_subnet.onnx.config import PerLayerPastKeyValuesGenerator, layer_kv_shapes, per_layer_onnx_config
from optimum_subnet.primal.modeling_primal import PrimalStateLayer, primal_entries

#: the two tensors of a primal layer's state, in the order of the past / present tuples
STATE_NAMES = ("query_sum", "key_sum")


def is_primal(config) -> bool:
    return bool(primal_entries(config))


def state_shapes(config) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """For each primal layer: ``((heads, head_dim), (kv_heads, head_dim))`` of its two running sums."""
    shapes = {}
    layers = getattr(config, "subnet_layers", None)
    kv = layer_kv_shapes(config)
    for index in primal_entries(config):
        kv_heads, head_dim = kv[index]
        heads = layers[index]["num_attention_heads"] if layers else config.num_attention_heads
        shapes[index] = ((heads, head_dim), (kv_heads, head_dim))
    return shapes


def is_state_name(name: str) -> bool:
    """A past / present tensor of a primal layer (not a KV tensor)."""
    return name.rsplit(".", 1)[-1] in STATE_NAMES


class PrimalStateGenerator(PerLayerPastKeyValuesGenerator):
    """Dummy past: each KV layer's keys / values, each primal layer's running sums (float32)."""

    def __init__(self, task, normalized_config, batch_size=DEFAULT_DUMMY_SHAPES["batch_size"],
                 sequence_length=DEFAULT_DUMMY_SHAPES["sequence_length"], **kwargs):
        super().__init__(task, normalized_config, batch_size=batch_size, sequence_length=sequence_length, **kwargs)
        self.states = state_shapes(normalized_config.config)

    def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
        past = super().generate(input_name, framework, int_dtype, float_dtype)
        for index, shapes in self.states.items():
            # sums of ``sequence_length`` unit-scale vectors, positive or not: any state is valid
            past[index] = tuple(self.random_float_tensor((self.batch_size, *shape), framework=framework,
                                                         dtype="fp32") for shape in shapes)
        return past


class PrimalExportCache(DynamicCache):
    """The cache a primal model is traced with: KV layers from the past keys / values, primal layers
    from the past sums; ``to_legacy_cache`` returns the states in the same per-layer layout."""

    def __init__(self, past, primal_layers, past_length):
        super().__init__()
        for index, (a, b) in enumerate(past):
            if index in primal_layers:
                layer = PrimalStateLayer()
                layer.query_sum, layer.key_sum, layer.seen = a, b, past_length
                layer.is_initialized = True
            else:
                layer = DynamicLayer()
                layer.update(a, b)
            self.layers.append(layer)

    def to_legacy_cache(self):
        return tuple((layer.query_sum, layer.key_sum) if isinstance(layer, PrimalStateLayer)
                     else (layer.keys, layer.values) for layer in self.layers)


@lru_cache(maxsize=None)
def primal_onnx_config(base_name: str) -> type:
    """Optimum's ``base_name`` config (with per-layer KV shapes) for a model with primal layers."""
    base = per_layer_onnx_config(base_name)

    def add_past_key_values(self, inputs_or_outputs, direction: str):
        if direction not in ("inputs", "outputs"):
            raise ValueError(f'direction must either be "inputs" or "outputs", got {direction}')
        name, length = (("past_key_values", "past_sequence_length") if direction == "inputs"
                        else ("present", "past_sequence_length + sequence_length"))
        states = state_shapes(self._config)
        for i in range(self._normalized_config.num_layers):
            if i in states:
                for part in STATE_NAMES:
                    inputs_or_outputs[f"{name}.{i}.{part}"] = {0: "batch_size"}
            else:
                inputs_or_outputs[f"{name}.{i}.key"] = {0: "batch_size", 2: length}
                inputs_or_outputs[f"{name}.{i}.value"] = {0: "batch_size", 2: length}

    def flatten_past_key_values(self, flattened_output, name, idx, t):
        parts = STATE_NAMES if idx in state_shapes(self._config) else ("key", "value")
        flattened_output[f"{name}.{idx}.{parts[0]}"] = t[0]
        flattened_output[f"{name}.{idx}.{parts[1]}"] = t[1]

    def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
        """Optimum's dummy inputs, with an attention mask as long as the past plus the new tokens: a
        primal layer's position count is read from it (Optimum's own mask may be a few tokens off)."""
        inputs = base.generate_dummy_inputs(self, framework, **kwargs)
        past = inputs.get("past_key_values")
        kv = [layer for index, layer in enumerate(past or []) if index not in state_shapes(self._config)]
        if kv and "attention_mask" in inputs:
            mask = inputs["attention_mask"]
            length = kv[0][0].shape[2] + inputs["input_ids"].shape[1]
            inputs["attention_mask"] = mask.new_ones((mask.shape[0], length))
        return inputs

    def patch_model_for_export(self, model, model_kwargs=None):
        patcher = base.patch_model_for_export(self, model, model_kwargs)
        inner = patcher.patched_forward
        signature = inspect.signature(patcher.orig_forward)
        primal_layers = set(primal_entries(self._config))

        @functools.wraps(inner)
        def forward(*args, **kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            past = bound.arguments.get("past_key_values")
            if isinstance(past, (list, tuple)):
                ids, mask = bound.arguments["input_ids"], bound.arguments["attention_mask"]
                bound.arguments["past_key_values"] = PrimalExportCache(past, primal_layers,
                                                                       mask.shape[1] - ids.shape[1])
            return inner(*bound.args, **bound.kwargs)

        patcher.patched_forward = forward
        return patcher

    return type(f"Primal{base_name}", (base,), {
        "DUMMY_INPUT_GENERATOR_CLASSES": (base.DUMMY_INPUT_GENERATOR_CLASSES[0], PrimalStateGenerator),
        "DUMMY_PKV_GENERATOR_CLASS": PrimalStateGenerator,
        "add_past_key_values": add_past_key_values,
        "flatten_past_key_values": flatten_past_key_values,
        "generate_dummy_inputs": generate_dummy_inputs,
        "patch_model_for_export": patch_model_for_export,
        "__doc__": f"Optimum's {base_name} for a model with Primal-Attention layers (their state as past/present).",
    })


def compare_state(cache, index: int, out: dict) -> dict:
    """Validation entry of a primal layer: |ONNX - PyTorch| of its two running sums. A sum grows with
    the context (it adds one query / key per token), so the difference that decides is relative to
    the sum's scale where that exceeds 1 (``state_max_scaled_diff``: max |diff| / max(1, max |sum|))."""
    import numpy as np

    layer = cache.layers[index]
    entry, worst = {"layer": index, "shape": list(out[f"present.{index}.query_sum"].shape)}, 0.0
    for part in STATE_NAMES:
        reference = getattr(layer, part).float().cpu().numpy()
        diff = float(np.abs(out[f"present.{index}.{part}"].astype(np.float32) - reference).max())
        entry[f"{part}_max_abs_diff"] = diff
        worst = max(worst, diff / max(1.0, float(np.abs(reference).max())))
    entry["state_max_scaled_diff"] = worst
    return entry
