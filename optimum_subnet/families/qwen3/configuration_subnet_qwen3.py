"""Configuration of a Qwen3 subnet with per-layer widths (``model_type = "subnet_qwen3"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.qwen3.configuration_qwen3 import Qwen3Config

from ..subnet_configuration import SubnetConfigMixin


class SubnetQwen3Config(SubnetConfigMixin, Qwen3Config):
    """A :class:`~transformers.Qwen3Config` whose decoder layers each have their own sizes (``subnet_layers``)."""

    model_type = "subnet_qwen3"
