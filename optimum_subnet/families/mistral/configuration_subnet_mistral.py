"""Configuration of a Mistral subnet with per-layer widths (``model_type = "subnet_mistral"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.mistral.configuration_mistral import MistralConfig

from ..subnet_configuration import SubnetConfigMixin


class SubnetMistralConfig(SubnetConfigMixin, MistralConfig):
    """A :class:`~transformers.MistralConfig` whose decoder layers each have their own sizes (``subnet_layers``)."""

    model_type = "subnet_mistral"
