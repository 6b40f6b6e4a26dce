"""Which adapter handles which ``config.model_type``: the one list a new family is added to."""

from __future__ import annotations

from optimum_subnet.core.errors import UnsupportedModelError
from optimum_subnet.families.base import ModelAdapter
from optimum_subnet.families.gemma3.adapter import Gemma3Adapter
from optimum_subnet.families.llama.adapter import LlamaAdapter
from optimum_subnet.families.mistral.adapter import MistralAdapter
from optimum_subnet.families.phi3.adapter import Phi3Adapter
from optimum_subnet.families.qwen2.adapter import Qwen2Adapter
from optimum_subnet.families.qwen3.adapter import Qwen3Adapter

#: One line per family.
ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlamaAdapter,
    MistralAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
    Gemma3Adapter,
    Phi3Adapter,
)


def supported_model_types() -> list[str]:
    return sorted(t for cls in ADAPTERS for t in cls.model_types)


def subnet_model_types() -> list[str]:
    return sorted(cls.subnet_model_type for cls in ADAPTERS)


def get_adapter(config) -> ModelAdapter:
    """The adapter for a dense model's config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types or model_type in getattr(cls, "text_part_of", ()):
            return cls()
    for cls in ADAPTERS:
        if model_type == cls.subnet_model_type:
            raise UnsupportedModelError(
                f"model is already a subnet ({model_type}); search and prune its dense parent instead"
            )
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())}"
    )


def text_part_adapter(model_type: str | None) -> ModelAdapter | None:
    """The adapter that prunes the text part of a multimodal ``model_type`` (``gemma3``), if any."""
    for cls in ADAPTERS:
        if model_type in getattr(cls, "text_part_of", ()):
            return cls()
    return None


def get_adapter_for_subnet(config) -> ModelAdapter:
    """The adapter that can run blocks of a saved subnet (``subnet_*`` model types) or of a dense model.

    A config class derived from a family's (e.g. a Primal-Attention model built on ``subnet_llama``)
    is run by the adapter of the nearest base class whose ``model_type`` a family knows: the blocks and
    norms are the base family's, only modules inside them differ.
    """
    model_type = getattr(config, "model_type", None)
    candidates = [model_type] + [getattr(base, "model_type", None) for base in type(config).__mro__[1:]]
    for candidate in candidates:
        for cls in ADAPTERS:
            if candidate and (candidate == cls.subnet_model_type or candidate in cls.model_types):
                return cls()
    raise UnsupportedModelError(f"unsupported architecture {model_type!r}; supported: "
                                f"{', '.join(supported_model_types() + subnet_model_types())}")
