"""Configuration of a Gemma3Text subnet with per-layer widths (``model_type = "subnet_gemma3"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig

from ..subnet_configuration import SubnetConfigMixin


class SubnetGemma3TextConfig(SubnetConfigMixin, Gemma3TextConfig):
    """A :class:`~transformers.Gemma3TextConfig` whose decoder layers each have their own sizes (``subnet_layers``)."""

    model_type = "subnet_gemma3"
