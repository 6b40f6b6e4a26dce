"""Heterogeneous (per-layer width) model classes, registered with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from optimum_subnet.families.llama import SubnetLlamaConfig, SubnetLlamaForCausalLM, SubnetLlamaModel


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` load saved subnets (idempotent)."""
    for model_type, config_cls, base_cls, lm_cls in (
        ("subnet_llama", SubnetLlamaConfig, SubnetLlamaModel, SubnetLlamaForCausalLM),
    ):
        try:
            AutoConfig.register(model_type, config_cls)
        except ValueError:  # already registered
            pass
        for auto_cls, model_cls in ((AutoModel, base_cls), (AutoModelForCausalLM, lm_cls)):
            try:
                auto_cls.register(config_cls, model_cls)
            except ValueError:
                pass


register_auto_classes()

#: Source files copied beside saved weights, so ``trust_remote_code=True`` loads without the plugin.
REMOTE_CODE_FILES = {
    "subnet_llama": (
        "llama/configuration_subnet_llama.py",
        "llama/modeling_subnet_llama.py",
    ),
}
AUTO_MAP = {
    "subnet_llama": {
        "AutoConfig": "configuration_subnet_llama.SubnetLlamaConfig",
        "AutoModel": "modeling_subnet_llama.SubnetLlamaModel",
        "AutoModelForCausalLM": "modeling_subnet_llama.SubnetLlamaForCausalLM",
    },
}

__all__ = ["SubnetLlamaConfig", "SubnetLlamaForCausalLM", "SubnetLlamaModel", "register_auto_classes"]
