"""Configuration of a Qwen2 subnet with per-layer widths (``model_type = "subnet_qwen2"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.qwen2.configuration_qwen2 import Qwen2Config

from ..subnet_configuration import SubnetConfigMixin


class SubnetQwen2Config(SubnetConfigMixin, Qwen2Config):
    """A :class:`~transformers.Qwen2Config` whose decoder layers each have their own sizes (``subnet_layers``)."""

    model_type = "subnet_qwen2"
