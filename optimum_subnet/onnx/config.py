"""Optimum ONNX export configs with per-layer KV-cache shapes, for every family and its subnets.

Optimum's configs build every layer's dummy past key/values from the global config (and some from
``hidden_size / num_attention_heads`` even when ``head_dim`` is explicit, e.g. Qwen3,
huggingface/optimum#2379). A subnet's layers have their own head size and KV head count, so the dummy
generator reads each layer's shape (``config.subnet_layers``, or the dense sizes). Each family's config
is Optimum's own (named by its adapter, ``onnx_config``) with that generator; the subnet model types are
registered with Optimum's ``TasksManager`` on import, so Optimum's tooling finds them by ``model_type``.
"""

from __future__ import annotations

from functools import lru_cache

from optimum.exporters.onnx import model_configs
from optimum.exporters.tasks import TasksManager
from optimum.utils import DEFAULT_DUMMY_SHAPES, DummyTextInputGenerator, NormalizedTextConfigWithGQA
from optimum.utils.input_generators import DummyPastKeyValuesGenerator

SUBNET_TASKS = ("feature-extraction", "feature-extraction-with-past", "text-generation", "text-generation-with-past")


def layer_kv_shapes(config) -> list[tuple[int, int]]:
    """(KV heads, head size) of every decoder layer."""
    layers = getattr(config, "subnet_layers", None)
    if layers:
        return [(layer["num_key_value_heads"], layer["head_dim"]) for layer in layers]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return [(heads, head_dim)] * config.num_hidden_layers


class PerLayerPastKeyValuesGenerator(DummyPastKeyValuesGenerator):
    """Dummy past key/values with each layer's own KV head count and head size."""

    def __init__(self, task, normalized_config, batch_size=DEFAULT_DUMMY_SHAPES["batch_size"],
                 sequence_length=DEFAULT_DUMMY_SHAPES["sequence_length"], random_batch_size_range=None,
                 random_sequence_length_range=None, **kwargs):
        super().__init__(task=task, normalized_config=normalized_config, batch_size=batch_size,
                         sequence_length=sequence_length, random_batch_size_range=random_batch_size_range,
                         random_sequence_length_range=random_sequence_length_range)
        self.layer_shapes = layer_kv_shapes(normalized_config.config)

    def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
        return [
            (
                self.random_float_tensor((self.batch_size, heads, self.sequence_length, head_dim), framework=framework,
                                         dtype=float_dtype),
                self.random_float_tensor((self.batch_size, heads, self.sequence_length, head_dim), framework=framework,
                                         dtype=float_dtype),
            )
            for heads, head_dim in self.layer_shapes
        ]


@lru_cache(maxsize=None)
def per_layer_onnx_config(base_name: str) -> type:
    """Optimum's ``base_name`` config with per-layer dummy KV shapes."""
    base = getattr(model_configs, base_name)
    return type(f"PerLayer{base_name}", (base,), {
        "DUMMY_INPUT_GENERATOR_CLASSES": (DummyTextInputGenerator, PerLayerPastKeyValuesGenerator),
        "DUMMY_PKV_GENERATOR_CLASS": PerLayerPastKeyValuesGenerator,
        "NORMALIZED_CONFIG_CLASS": NormalizedTextConfigWithGQA,
        "__doc__": f"Optimum's {base_name} with each layer's own KV head count and head size.",
    })


def register() -> None:
    """Register every family's subnet model type with Optimum's exporter (idempotent)."""
    from optimum_subnet.families.registry import ADAPTERS

    for adapter_cls in ADAPTERS:
        model_type = adapter_cls.subnet_model_type
        cls = per_layer_onnx_config(adapter_cls.onnx_config)
        TasksManager.create_register("onnx", overwrite_existing=True)(model_type, *SUBNET_TASKS)(cls)
        TasksManager._SUPPORTED_MODEL_TYPE.setdefault(model_type, {}).setdefault("onnx", {})


register()
