"""Register the Primal-Attention model types with transformers' Auto classes (idempotent), and the
files a saved model needs beside its weights for ``trust_remote_code=True``."""

from transformers import AutoConfig, AutoModelForCausalLM

from optimum_subnet.primal.modeling_primal import PrimalLlamaConfig, PrimalLlamaForCausalLM
from optimum_subnet.primal.modeling_primal_subnet_llama import (
    PrimalSubnetLlamaConfig,
    PrimalSubnetLlamaForCausalLM,
)

#: base model type -> (config class, causal-LM class, files copied beside the weights, relative to
#: ``optimum_subnet/primal``). A subnet base also needs the subnet's own files (``save_subnet``'s).
CLASSES = {
    "llama": (PrimalLlamaConfig, PrimalLlamaForCausalLM, ("modeling_primal.py",)),
    "subnet_llama": (PrimalSubnetLlamaConfig, PrimalSubnetLlamaForCausalLM,
                     ("modeling_primal.py", "modeling_primal_subnet_llama.py")),
}


def register_auto_classes() -> None:
    for config_cls, lm_cls, _ in CLASSES.values():
        try:
            AutoConfig.register(config_cls.model_type, config_cls)
        except ValueError:  # already registered
            pass
        try:
            AutoModelForCausalLM.register(config_cls, lm_cls)
        except ValueError:
            pass


def auto_map(base_model_type: str) -> dict[str, str]:
    config_cls, lm_cls, files = CLASSES[base_model_type]
    module = files[-1][:-3]
    return {"AutoConfig": f"{module}.{config_cls.__name__}", "AutoModelForCausalLM": f"{module}.{lm_cls.__name__}"}


register_auto_classes()
