"""The Primal-Attention model types of every supported family (dense and subnet), registered with
transformers' Auto classes (idempotent), and the entry module a saved model needs beside its weights
for ``trust_remote_code=True``.

One generic construction (:func:`~optimum_subnet.primal.modeling_primal.primal_classes`) derives each
primal class pair from the family's own classes: the dense ones transformers registers for the
family's model types, the subnet ones the family's adapter declares. The pairs are declared in this
module (``PrimalQwen3ForCausalLM``, ``PrimalSubnetGemma3TextForCausalLM``, ...) so they pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from optimum_subnet.families.registry import ADAPTERS
from optimum_subnet.primal.modeling_primal import primal_classes

#: files copied beside the weights of every primal model (relative to ``optimum_subnet/primal``)
PRIMAL_REMOTE_CODE = ("modeling_primal.py",)


@dataclass(frozen=True)
class PrimalFamily:
    """A base model type the pass converts, its classes and the primal classes derived from them."""

    base_model_type: str
    base_config: type
    base_lm: type
    config: type
    lm: type
    #: the family's adapter
    adapter: object
    #: a subnet base (its modeling files are saved too)
    subnet: bool

    @property
    def model_type(self) -> str:
        return self.config.model_type

    def entry_module(self) -> str:
        """Name of the generated module that declares the primal classes in a saved folder."""
        return f"modeling_primal_{self.base_model_type}"


def _families() -> dict[str, PrimalFamily]:
    out = {}
    for adapter_cls in ADAPTERS:
        adapter = adapter_cls()
        bases = [(t, CONFIG_MAPPING[t], MODEL_FOR_CAUSAL_LM_MAPPING[CONFIG_MAPPING[t]], False)
                 for t in adapter.model_types]
        subnet_config, _, subnet_lm = adapter.subnet_classes()
        bases.append((adapter.subnet_model_type, subnet_config, subnet_lm, True))
        for base_type, config_cls, lm_cls, subnet in bases:
            config, lm = primal_classes(config_cls, lm_cls, __name__)
            globals()[config.__name__], globals()[lm.__name__] = config, lm
            out[base_type] = PrimalFamily(base_type, config_cls, lm_cls, config, lm, adapter, subnet)
    return out


#: base model type (``llama``, ``subnet_qwen3``, ...) -> its primal family
FAMILIES: dict[str, PrimalFamily] = _families()


def family_of(model_type: str | None) -> PrimalFamily | None:
    """The primal family of a base or a primal model type (None: not one the pass knows)."""
    for family in FAMILIES.values():
        if model_type in (family.base_model_type, family.model_type):
            return family
    return None


def register_auto_classes() -> None:
    for family in FAMILIES.values():
        try:
            AutoConfig.register(family.model_type, family.config)
        except ValueError:  # already registered
            pass
        try:
            AutoModelForCausalLM.register(family.config, family.lm)
        except ValueError:
            pass


def entry_module_source(family: PrimalFamily) -> str:
    """The saved folder's entry module: the family's classes, and the primal pair derived from them.

    A dense base imports transformers' classes; a subnet base the subnet's saved files (and, because
    ``trust_remote_code`` copies only the entry module's *direct* relative imports, the two shared
    subnet files those import in turn)."""
    lines = [f'"""{family.base_lm.__name__} with Primal-Attention layers (model type ``{family.model_type}``).',
             "",
             "Written by optimum-subnet beside the weights; the classes are derived by",
             '``modeling_primal.primal_classes`` from the family\'s own (loads with ``trust_remote_code=True``)."""',
             ""]
    for cls in (family.base_config, family.base_lm):
        source = cls.__module__
        if family.subnet:
            source = "." + source.rsplit(".", 1)[-1]
        lines.append(f"from {source} import {cls.__name__}")
    if family.subnet:
        lines += ["from .subnet_configuration import SubnetConfigMixin  # noqa: F401  (copied for trust_remote_code)",
                  "from .subnet_modeling import SubnetAttention  # noqa: F401"]
    lines += ["from .modeling_primal import primal_classes", "",
              f"{family.config.__name__}, {family.lm.__name__} = primal_classes("
              f"{family.base_config.__name__}, {family.base_lm.__name__}, __name__)", "",
              f'__all__ = ["{family.config.__name__}", "{family.lm.__name__}"]', ""]
    return "\n".join(lines)


def auto_map(family: PrimalFamily) -> dict[str, str]:
    module = family.entry_module()
    return {"AutoConfig": f"{module}.{family.config.__name__}",
            "AutoModelForCausalLM": f"{module}.{family.lm.__name__}"}


register_auto_classes()
