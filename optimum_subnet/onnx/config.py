"""Optimum ONNX export config for ``subnet_llama``: per-layer KV-cache shapes.

Optimum's LLaMA config builds every layer's dummy past key/values as
``(batch, num_key_value_heads, past, head_dim)`` from the global config. A subnet's layers have
their own head size (and, after head pruning, their own KV head count), so the dummy generator reads
them from ``config.subnet_layers``. Registered with Optimum's ``TasksManager`` on import, so
``onnx_export_from_model`` / ``ORTModelForCausalLM`` tooling find it by ``model_type``.
"""

from __future__ import annotations

from optimum.exporters.onnx.model_configs import LlamaOnnxConfig
from optimum.exporters.tasks import TasksManager
from optimum.utils import DEFAULT_DUMMY_SHAPES, DummyTextInputGenerator, NormalizedTextConfigWithGQA
from optimum.utils.input_generators import DummyPastKeyValuesGenerator

SUBNET_TASKS = ("feature-extraction", "feature-extraction-with-past", "text-generation", "text-generation-with-past")


class SubnetDummyPastKeyValuesGenerator(DummyPastKeyValuesGenerator):
    """Dummy past key/values with each layer's own KV head count and head size."""

    def __init__(self, task, normalized_config, batch_size=DEFAULT_DUMMY_SHAPES["batch_size"],
                 sequence_length=DEFAULT_DUMMY_SHAPES["sequence_length"], random_batch_size_range=None,
                 random_sequence_length_range=None, **kwargs):
        super().__init__(task=task, normalized_config=normalized_config, batch_size=batch_size,
                         sequence_length=sequence_length, random_batch_size_range=random_batch_size_range,
                         random_sequence_length_range=random_sequence_length_range)
        self.layer_shapes = [
            (layer["num_key_value_heads"], layer["head_dim"]) for layer in normalized_config.config.subnet_layers
        ]

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


class SubnetLlamaOnnxConfig(LlamaOnnxConfig):
    DUMMY_INPUT_GENERATOR_CLASSES = (DummyTextInputGenerator, SubnetDummyPastKeyValuesGenerator)
    DUMMY_PKV_GENERATOR_CLASS = SubnetDummyPastKeyValuesGenerator
    NORMALIZED_CONFIG_CLASS = NormalizedTextConfigWithGQA


def register() -> None:
    """Register the export config for ``subnet_llama`` (idempotent)."""
    TasksManager.create_register("onnx", overwrite_existing=True)("subnet_llama", *SUBNET_TASKS)(SubnetLlamaOnnxConfig)
    TasksManager._SUPPORTED_MODEL_TYPE.setdefault("subnet_llama", {}).setdefault("onnx", {})


register()
