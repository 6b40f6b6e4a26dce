"""Configuration of a LLaMA-family subnet with per-layer widths (``model_type = "subnet_llama"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.llama.configuration_llama import LlamaConfig

from ..subnet_configuration import SubnetConfigMixin


class SubnetLlamaConfig(SubnetConfigMixin, LlamaConfig):
    """A :class:`~transformers.LlamaConfig` whose decoder layers each have their own sizes
    (``subnet_layers``, see ``subnet_modeling``). ``head_dim`` (the top-level one) stays the
    *original* head size: it sets the rotary table and the softmax scale 1/sqrt(head_dim), which a
    subnet keeps (Shen et al. 2024, Sec. 3.1)."""

    model_type = "subnet_llama"
