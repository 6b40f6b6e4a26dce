"""ONNX Runtime side: the runtime model class, the generator for direct graphs, registrations."""

from optimum_subnet.runtime.generator import ORTGenerator, SamplingConfig
from optimum_subnet.runtime.modeling import ORTSubnetModelForCausalLM, install_dispatch
from optimum_subnet.runtime.registration import register_with_optimum

register_with_optimum()
install_dispatch()

__all__ = ["ORTGenerator", "ORTSubnetModelForCausalLM", "SamplingConfig", "install_dispatch", "register_with_optimum"]
