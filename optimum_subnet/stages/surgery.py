"""Physical surgery: cut a real, smaller model out of a dense one according to a spec."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from optimum_subnet.families import get_adapter

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

    from optimum_subnet.core.spec import SubnetSpec

logger = logging.getLogger(__name__)


def extract_subnet(model: "PreTrainedModel", spec: "SubnetSpec", adapter=None, validate: bool = True) -> "PreTrainedModel":
    """Build the subnet model that ``spec`` describes, with weights inherited from ``model``.

    Kept rows/columns are copied (``index_select``); embeddings, norms and the LM head are shared
    with ``model`` (not copied), so building a candidate during the search is cheap. The result is a
    normal ``PreTrainedModel`` (``SubnetLlamaForCausalLM`` for LLaMA) that ``save_pretrained`` writes
    as a really smaller checkpoint.
    """
    from accelerate import init_empty_weights
    from transformers.modeling_utils import no_init_weights

    adapter = adapter or get_adapter(model.config)
    if validate:  # the search's candidates are valid by construction: it skips this per-candidate cost
        spec.validate(adapter.shape(model.config))
    config = adapter.subnet_config(model.config, spec)
    config.dtype = model.dtype
    state = adapter.slice_state_dict(model, spec)
    # no_init_weights: every weight is assigned below; running the random initializers on the empty
    # tensors cost ~0.3 s per search candidate at 7B shape
    with init_empty_weights(include_buffers=False), no_init_weights():
        subnet = adapter.subnet_model_class()(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = subnet.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:  # a bug in an adapter, not a user error
        raise RuntimeError(f"surgery produced a mismatched state dict: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        subnet.lm_head.weight = subnet.model.embed_tokens.weight
    subnet.to(next(model.parameters()).device)  # moves the freshly built buffers (rotary tables)
    subnet.eval()
    return subnet


@torch.no_grad()
def masked_copy(model: "PreTrainedModel", spec: "SubnetSpec", adapter=None) -> "PreTrainedModel":
    """A dense-shaped copy of ``model`` with every pruned row/column zeroed (for equivalence tests)."""
    import copy

    adapter = adapter or get_adapter(model.config)
    masked = copy.deepcopy(model)
    shape = adapter.shape(model.config)
    kept = {layer.source_index: layer for layer in spec.layers}
    layers = adapter.decoder_layers(masked)
    for index, layer in enumerate(layers):
        linears = adapter.linears(layer)
        if index not in kept:
            for linear in linears.values():
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
            continue
        rows = adapter.kept_rows(kept[index], shape)
        for role, linear in linears.items():
            dim = 1 if role in ("o", "down") else 0
            mask = torch.zeros(linear.weight.shape[dim], dtype=torch.bool)
            mask[rows[role]] = True
            if dim == 0:
                linear.weight[~mask] = 0
                if linear.bias is not None:
                    linear.bias[~mask] = 0
            else:
                linear.weight[:, ~mask] = 0
    return masked
