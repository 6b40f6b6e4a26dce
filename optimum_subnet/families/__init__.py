"""Model families: one adapter per family, picked by ``config.model_type`` (:mod:`.registry`)."""

from optimum_subnet.families.base import ACTIVATION_SITES, DecoderFamily, FamilyTraits, ModelAdapter, Projection
from optimum_subnet.families.registry import (
    ADAPTERS,
    get_adapter,
    get_adapter_for_subnet,
    subnet_model_types,
    supported_model_types,
)

__all__ = ["ACTIVATION_SITES", "ADAPTERS", "DecoderFamily", "FamilyTraits", "ModelAdapter", "Projection",
           "get_adapter", "get_adapter_for_subnet", "subnet_model_types", "supported_model_types"]
