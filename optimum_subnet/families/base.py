"""Model adapters: the only code that knows a family's module names and layouts.

An adapter is picked by ``config.model_type`` (never by a name substring). Everything else in the
package (calibration, importance, search, reformation, surgery) talks to models through it, so a
new family is one new adapter plus the shared contract tests (``tests/unit/test_adapters.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel

    from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec


#: Sub-layer groups whose *input* activations a calibration pass records (one Gram matrix each).
#: ``attn_in`` feeds W_Q/W_K/W_V, ``attn_out`` feeds W_O, ``mlp_in`` feeds W_gate/W_up,
#: ``mlp_out`` feeds W_down.
ACTIVATION_SITES = ("attn_in", "attn_out", "mlp_in", "mlp_out")


class ModelAdapter(ABC):
    #: ``config.model_type`` values of dense models this adapter prunes.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: ``config.model_type`` of the heterogeneous subnets it produces (and can re-run blocks of).
    subnet_model_type: ClassVar[str]

    # -------------------------------------------------------------------------------- shapes
    @abstractmethod
    def shape(self, config: "PretrainedConfig") -> "ModelShape":
        """The dense architecture's sizes."""

    # ------------------------------------------------------------------------------ modules
    @abstractmethod
    def decoder_layers(self, model: "PreTrainedModel") -> "nn.ModuleList": ...

    @abstractmethod
    def embed(self, model: "PreTrainedModel", input_ids: "torch.Tensor") -> "torch.Tensor":
        """Hidden states entering the first decoder layer."""

    @abstractmethod
    def layer_call_kwargs(self, model: "PreTrainedModel", hidden_states: "torch.Tensor") -> dict[str, Any]:
        """Keyword arguments a decoder layer needs besides the hidden states (mask, rotary tables)."""

    @abstractmethod
    def site_modules(self, layer: "nn.Module") -> dict[str, "nn.Module"]:
        """For each activation site, the module whose input is that site's activation."""

    @abstractmethod
    def linears(self, layer: "nn.Module") -> dict[str, "nn.Linear"]:
        """The layer's projections by role: q, k, v, o, gate, up, down."""

    @abstractmethod
    def attention_sublayer(self, layer: "nn.Module", hidden_states: "torch.Tensor", kwargs: dict) -> "torch.Tensor":
        """Residual stream after the attention sub-layer: ``h + attn(norm(h))``."""

    @abstractmethod
    def mlp_input(self, layer: "nn.Module", hidden_states: "torch.Tensor") -> "torch.Tensor":
        """Input of the MLP projections given the residual stream after attention: ``norm(h)``."""

    # ------------------------------------------------------------------------------ surgery
    @abstractmethod
    def subnet_config(self, config: "PretrainedConfig", spec: "SubnetSpec") -> "PretrainedConfig": ...

    @abstractmethod
    def subnet_model_class(self) -> type: ...

    @abstractmethod
    def slice_state_dict(self, model: "PreTrainedModel", spec: "SubnetSpec") -> dict[str, "torch.Tensor"]:
        """The subnet's weights, taken from the dense model (kept rows/columns only)."""

    @abstractmethod
    def kept_rows(self, layer_spec: "LayerSpec", shape: "ModelShape") -> dict[str, "torch.Tensor"]:
        """Dense row (output) indices kept per projection role; for o/down the kept *columns*."""
