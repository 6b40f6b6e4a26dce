"""ONNX Runtime side: the runtime model class, the GroupQueryAttention graph pass, registrations."""

from .modeling import ORTSubnetModelForCausalLM, install_dispatch
from .registration import register_with_optimum

register_with_optimum()
install_dispatch()

__all__ = ["ORTSubnetModelForCausalLM", "install_dispatch", "register_with_optimum"]
