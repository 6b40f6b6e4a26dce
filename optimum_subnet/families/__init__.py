"""Registry of model adapters, keyed by ``config.model_type``."""

from __future__ import annotations

from optimum_subnet.core.errors import UnsupportedModelError
from optimum_subnet.families.base import ACTIVATION_SITES, ModelAdapter
from optimum_subnet.families.llama.adapter import LlamaAdapter

_ADAPTERS: tuple[type[ModelAdapter], ...] = (LlamaAdapter,)


def supported_model_types() -> list[str]:
    return sorted(t for cls in _ADAPTERS for t in cls.model_types)


def get_adapter(config) -> ModelAdapter:
    """The adapter for a dense model's config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    for cls in _ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    for cls in _ADAPTERS:
        if model_type == cls.subnet_model_type:
            raise UnsupportedModelError(
                f"model is already a subnet ({model_type}); search and prune its dense parent instead"
            )
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())}"
    )


def get_adapter_for_subnet(config) -> ModelAdapter:
    """The adapter that can run blocks of a saved subnet (``subnet_*`` model types)."""
    model_type = getattr(config, "model_type", None)
    for cls in _ADAPTERS:
        if model_type == cls.subnet_model_type or model_type in cls.model_types:
            return cls()
    raise UnsupportedModelError(f"unsupported architecture {model_type!r}")


__all__ = ["ACTIVATION_SITES", "LlamaAdapter", "ModelAdapter", "get_adapter", "get_adapter_for_subnet",
           "supported_model_types"]
