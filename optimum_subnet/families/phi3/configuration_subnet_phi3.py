"""Configuration of a Phi3 subnet with per-layer widths (``model_type = "subnet_phi3"``).

Copied beside saved weights (with ``subnet_configuration.py``) so that ``trust_remote_code=True``
loads a subnet without optimum-subnet installed.
"""

from transformers.models.phi3.configuration_phi3 import Phi3Config

from ..subnet_configuration import SubnetConfigMixin


class SubnetPhi3Config(SubnetConfigMixin, Phi3Config):
    """A :class:`~transformers.Phi3Config` whose decoder layers each have their own sizes (``subnet_layers``)."""

    model_type = "subnet_phi3"
