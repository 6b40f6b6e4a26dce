"""Register every family's subnet classes with the transformers Auto classes (on import, idempotent)."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from optimum_subnet.families.registry import ADAPTERS

#: Files every subnet needs beside its weights (the generic per-layer construction).
SHARED_REMOTE_CODE = ("subnet_configuration.py", "subnet_modeling.py")


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` load saved subnets of every family."""
    for adapter_cls in ADAPTERS:
        config_cls, base_cls, lm_cls = adapter_cls().subnet_classes()
        try:
            AutoConfig.register(adapter_cls.subnet_model_type, config_cls)
        except ValueError:  # already registered
            pass
        for auto_cls, model_cls in ((AutoModel, base_cls), (AutoModelForCausalLM, lm_cls)):
            try:
                auto_cls.register(config_cls, model_cls)
            except ValueError:
                pass


def auto_map(adapter) -> dict[str, str]:
    """The ``auto_map`` written into a saved subnet's config.json (for ``trust_remote_code=True``)."""
    config_cls, base_cls, lm_cls = adapter.subnet_classes()
    config_file, modeling_file = (f.rsplit("/", 1)[-1][:-3] for f in adapter.remote_code())
    return {
        "AutoConfig": f"{config_file}.{config_cls.__name__}",
        "AutoModel": f"{modeling_file}.{base_cls.__name__}",
        "AutoModelForCausalLM": f"{modeling_file}.{lm_cls.__name__}",
    }


register_auto_classes()
