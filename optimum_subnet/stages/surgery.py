"""Physical surgery: cut a real, smaller model out of a dense one according to a spec."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.families.base import COLUMN_ROLES

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

    from optimum_subnet.core.spec import SubnetSpec

logger = logging.getLogger(__name__)


def extract_subnet(model: "PreTrainedModel", spec: "SubnetSpec", adapter=None, validate: bool = True,
                   move: bool = True) -> "PreTrainedModel":
    """Build the subnet model that ``spec`` describes, with weights inherited from ``model``.

    Kept rows/columns are copied (``index_select``); embeddings, norms and the LM head are shared
    with ``model`` (not copied), so building a candidate during the search is cheap. The result is a
    normal ``PreTrainedModel`` (``SubnetLlamaForCausalLM`` for LLaMA) that ``save_pretrained`` writes
    as a really smaller checkpoint. ``move=False`` leaves the new tensors where the slicing made them
    (an offloaded run: the dense blocks live in CPU memory while the shared embeddings sit on the
    device, and moving the subnet would drag the shared layer norms along).
    """
    from accelerate import init_empty_weights
    from transformers.modeling_utils import no_init_weights

    adapter = adapter or get_adapter(model.config)
    if validate:  # the search's candidates are valid by construction: it skips this per-candidate cost
        spec.validate(adapter.shape(model.config))
    config = adapter.subnet_config(model, spec)
    config.dtype = model.dtype
    state = adapter.slice_state_dict(model, spec)
    # no_init_weights: every weight is assigned below; running the random initializers on the empty
    # tensors cost ~0.3 s per search candidate at 7B shape
    with init_empty_weights(include_buffers=False), no_init_weights():
        subnet = adapter.subnet_model_class()(config)
    tied = adapter.tied_head_keys() if config.tie_word_embeddings else ()
    for key in tied:
        state.pop(key, None)
    missing, unexpected = subnet.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:  # a bug in an adapter, not a user error
        raise RuntimeError(f"surgery produced a mismatched state dict: missing={missing} unexpected={unexpected}")
    if tied:
        adapter.tie_head(subnet)
    if move:
        subnet.to(next(model.parameters()).device)  # moves the freshly built buffers (rotary tables)
    subnet.eval()
    return subnet


def save_subnet(model: "PreTrainedModel", tokenizer, spec: "SubnetSpec", folder) -> None:
    """A real, smaller checkpoint: weights (safetensors), config with ``auto_map``, the modeling code
    (so ``trust_remote_code=True`` loads it without the plugin), the tokenizer and the subnet spec.

    The family files import the shared per-layer construction from their parent package
    (``from ..subnet_modeling``); beside the weights all files sit in one folder, so those imports
    are rewritten to ``from .subnet_modeling``.
    """
    from pathlib import Path

    from optimum_subnet.core.spec import SPEC_FILE_NAME
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.families.auto import SHARED_REMOTE_CODE, auto_map

    folder = Path(folder)
    adapter = get_adapter_for_subnet(model.config)
    model.config.auto_map = auto_map(adapter)
    model.save_pretrained(folder, safe_serialization=True)
    package = Path(__file__).resolve().parent.parent / "families"
    for relative in SHARED_REMOTE_CODE + adapter.remote_code():
        source = (package / relative).read_text(encoding="utf-8")
        (folder / Path(relative).name).write_text(source.replace("from ..subnet_", "from .subnet_"), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    spec.save(folder / SPEC_FILE_NAME)


@torch.no_grad()
def mask_layer(layer, adapter, layer_spec, shape) -> None:
    """Zero, in place, every row / column of ``layer`` that ``layer_spec`` prunes: the layer then computes
    what the pruned layer computes (up to floating-point summation order), at the dense shape."""
    rows = adapter.kept_rows(layer_spec, shape)
    for role, linear in adapter.linears(layer).items():
        dim = 1 if role in COLUMN_ROLES else 0
        keep = torch.zeros(linear.weight.shape[dim], dtype=torch.bool, device=linear.weight.device)
        keep[rows[role].to(keep.device)] = True
        if dim == 0:
            linear.weight[~keep] = 0
            if linear.bias is not None:
                linear.bias[~keep] = 0
        else:
            linear.weight[:, ~keep] = 0


@torch.no_grad()
def masked_copy(model: "PreTrainedModel", spec: "SubnetSpec", adapter=None) -> "PreTrainedModel":
    """A dense-shaped copy of ``model`` with every pruned row/column zeroed (for equivalence tests)."""
    import copy

    adapter = adapter or get_adapter(model.config)
    masked = copy.deepcopy(model)
    shape = adapter.shape(model.config)
    kept = {layer.source_index: layer for layer in spec.layers}
    for index, layer in enumerate(adapter.decoder_layers(masked)):
        if index in kept:
            mask_layer(layer, adapter, kept[index], shape)
            continue
        for linear in adapter.linears(layer).values():
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
    return masked


@contextmanager
def masked_as(model: "PreTrainedModel", spec: "SubnetSpec", adapter=None):
    """Within the block, the dense ``model`` computes what ``spec``'s subnet computes, without building it.

    Each kept layer's row projections (q, k, v, gate, up; fused ones by their row ranges) have their pruned
    outputs multiplied by zero: a pruned q/k RoPE pair adds nothing to the attention scores (the subnet keeps
    the dense softmax scale), a pruned v channel or a pruned MLP channel feeds zeros to W_O / W_down, a
    pruned KV head with its query group outputs zero. A dropped layer's W_O and W_down outputs are zeroed
    (biases included), so the residual stream passes it unchanged (it is still computed: families differ in
    what a decoder layer returns, so it is not bypassed). The same
    function as :func:`extract_subnet` up to summation order, except inside heads of q/k-norm families
    (Qwen3, Gemma3), whose norm the subnet takes over the kept channels only: there it is an approximation.

    Costs the dense forward instead of the subnet's, but no construction: building a subnet costs ~0.1 s of
    Python per 32-layer candidate whatever its widths, more than a short screening forward on a GPU.
    Nothing is copied or changed in ``model``; the hooks are removed on exit.
    """
    from optimum_subnet.families.base import Projection

    adapter = adapter or get_adapter(model.config)
    shape = adapter.shape(model.config)
    layers = adapter.decoder_layers(model)
    kept = {layer_spec.source_index: layer_spec for layer_spec in spec.layers}
    handles = []
    try:
        for index, layer in enumerate(layers):
            layer_spec = kept.get(index)
            if layer_spec is None:
                linears = adapter.linears(layer)
                for role in COLUMN_ROLES:
                    handles.append(linears[role].register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)))
                continue
            rows = adapter.kept_rows(layer_spec, shape)
            masks: dict[torch.nn.Module, torch.Tensor] = {}
            for role, projection in adapter.linears(layer).items():
                if role in COLUMN_ROLES:  # their pruned inputs are already zero
                    continue
                module = projection.module if isinstance(projection, Projection) else projection
                fused = isinstance(projection, Projection) and projection.rows is not None
                offset = projection.rows.start if fused else 0
                weight = module.weight
                mask = masks.setdefault(module, torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                            device=weight.device))
                mask[rows[role].to(weight.device) + offset] = 1
            for module, mask in masks.items():
                handles.append(module.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask))
        yield model
    finally:
        for handle in handles:
            handle.remove()
