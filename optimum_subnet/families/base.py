"""Model adapters: the only code that knows a family's module names, layouts and quirks.

An adapter is picked by ``config.model_type`` (never by a name substring, see :mod:`.registry`).
Everything else in the package (calibration, importance, search, reformation, surgery, baselines,
export, memory estimates) talks to models through it, so a new family is one folder with an adapter
subclass, one registry line and one contract-test subclass (``tests/unit/families/test_contract.py``).

:class:`DecoderFamily` implements the whole adapter for the usual pre-norm decoder layout from a few
declarations: where the projections live (separate ``q/k/v`` or fused ``qkv``, separate ``gate/up``
or fused ``gate_up``), the norm placement (plain or Gemma's sandwich), and :class:`FamilyTraits`
(biases, q/k norms, partial rotary, whether in-head channel pruning is function-preserving). The
heterogeneous subnet classes of a family are thin subclasses of the family's own transformers
classes built by the generic construction in :mod:`.subnet_modeling`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel


#: Sub-layer groups whose *input* activations a calibration pass records (one Gram matrix each).
#: ``attn_in`` feeds W_Q/W_K/W_V, ``attn_out`` feeds W_O, ``mlp_in`` feeds W_gate/W_up,
#: ``mlp_out`` feeds W_down.
ACTIVATION_SITES = ("attn_in", "attn_out", "mlp_in", "mlp_out")
#: Projection roles. o / down are pruned by *columns* (their inputs); the others by rows.
ROLES = ("q", "k", "v", "o", "gate", "up", "down")
COLUMN_ROLES = ("o", "down")


@dataclass(frozen=True)
class FamilyTraits:
    """What differs between families, as data (read by accounting, pruning, export and the docs)."""

    #: q/k/v projections carry biases while o_proj does not (Qwen2); ``attention_bias`` in the config
    #: (LLaMA) means all four do.
    qkv_bias: bool = False
    #: per-head RMSNorm on q and k before RoPE, one weight shared by every head (Qwen3, Gemma3): pruning
    #: channels inside a head changes the norm's statistics, so only whole-head pruning is exact, and
    #: in-head pruning must keep the same channels in every head of a layer (one norm weight).
    qk_norm: bool = False
    #: Gemma's sandwich norms: post-attention, pre- and post-feedforward norms around the sub-layers.
    sandwich_norms: bool = False
    #: fused projections (Phi-3): ``qkv_proj`` rows [q; k; v], ``gate_up_proj`` rows [gate; up].
    fused_qkv: bool = False
    fused_gate_up: bool = False

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.sandwich_norms else 2

    @property
    def in_head_pruning_exact(self) -> bool:
        return not self.qk_norm


@dataclass(frozen=True)
class GraphLayout:
    """How the direct ONNX builder (:mod:`optimum_subnet.onnx.builder`) writes one family's decoder: the
    graph patterns that differ between families, as data (read from the config by :meth:`DecoderFamily.graph_layout`)."""

    #: RMSNorm scale is ``weight + norm_offset`` (Gemma computes ``x * (1 + w)``)
    norm_offset: float = 0.0
    rms_norm_eps: float = 1e-6
    #: Gemma's post-attention / pre- and post-feedforward norms around the sub-layers
    sandwich_norms: bool = False
    #: per-head RMSNorm on q and k before RoPE (Qwen3, Gemma3): SimplifiedLayerNormalization over the head
    qk_norm: bool = False
    #: MLP activation of the gate: ``silu`` (com.microsoft QuickGelu, alpha 1) or ``gelu_tanh`` (FastGelu)
    activation: str = "silu"
    #: embeddings multiplied by this (Gemma: sqrt(hidden), in the weights' dtype)
    embedding_scale: float | None = None
    #: ``cap * tanh(logits / cap)`` after the LM head (Gemma2-style); GQA's ``softcap`` for attention logits
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    #: channels of a head that rotate (partial rotary: fewer than the head size)
    rotary_dim: int = 0


class Projection:
    """One projection role of a layer: the module's weight (a row slice of it for fused projections),
    its bias, and a call that computes just this role's outputs."""

    def __init__(self, module: nn.Linear, rows: slice | None = None):
        self.module = module
        self.rows = rows

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight if self.rows is None else self.module.weight[self.rows]

    @property
    def bias(self) -> torch.Tensor | None:
        if self.module.bias is None or self.rows is None:
            return self.module.bias
        return self.module.bias[self.rows]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.module(x)
        return nn.functional.linear(x, self.weight, self.bias)


@dataclass
class LayerContext:
    """What a decoder layer needs besides its hidden states, for one batch shape: the mask of each
    attention type and the rotary tables (global, and Gemma's local ones)."""

    masks: dict[str, Any]
    position_embeddings: tuple
    position_embeddings_local: tuple | None
    position_ids: torch.Tensor
    cache_position: torch.Tensor


class ModelAdapter:
    """The adapter interface. :class:`DecoderFamily` implements it for every supported family."""

    #: ``config.model_type`` values of dense models this adapter prunes.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: ``config.model_type`` of the heterogeneous subnets it produces (and can re-run blocks of).
    subnet_model_type: ClassVar[str]
    traits: ClassVar[FamilyTraits] = FamilyTraits()
    #: Optimum's ONNX export config class for the family (in ``optimum.exporters.onnx.model_configs``)
    onnx_config: ClassVar[str] = "LlamaOnnxConfig"


class DecoderFamily(ModelAdapter):
    """Adapter for pre-norm decoder families, from declarations (see the module docstring)."""

    #: module paths inside a decoder layer, by role (fused families map q/k/v to one path)
    attention_path: ClassVar[str] = "self_attn"
    mlp_path: ClassVar[str] = "mlp"

    # ---------------------------------------------------------------------------- the family
    def subnet_classes(self) -> tuple[type, type, type]:
        """``(config, base model, causal LM)`` classes of this family's subnets."""
        raise NotImplementedError

    def remote_code(self) -> tuple[str, ...]:
        """Source files (relative to :mod:`optimum_subnet.families`) saved beside a subnet's weights."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- shapes
    @staticmethod
    def head_dim(config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def shape(self, config: "PretrainedConfig") -> ModelShape:
        """The dense architecture's sizes (also for a subnet's config: its top-level sizes are the dense ones)."""
        head_dim = self.head_dim(config)
        rotary = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
        return ModelShape(
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(config, "attention_bias", False)),
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
            rope=True,
            qkv_bias=self.traits.qkv_bias,
            qk_norm=self.traits.qk_norm,
            norms_per_layer=self.traits.norms_per_layer,
            rotary_dim=0 if rotary == head_dim else rotary,
        )

    # ------------------------------------------------------------------------------ modules
    def decoder_layers(self, model: "PreTrainedModel") -> nn.ModuleList:
        return model.model.layers

    def embed(self, model: "PreTrainedModel", input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the first decoder layer (Gemma's scaling is inside its embedding)."""
        return model.model.embed_tokens(input_ids)

    def final_norm(self, model: "PreTrainedModel", hidden_states: torch.Tensor) -> torch.Tensor:
        """The decoder's final norm (what :meth:`final_hidden_states` ends with), for block-wise passes."""
        return model.model.norm(hidden_states)

    def final_hidden_states(self, model: "PreTrainedModel", input_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's output (after the final norm), before the LM head."""
        return model.model(input_ids=input_ids, use_cache=False).last_hidden_state

    def logits(self, model: "PreTrainedModel", hidden_states: torch.Tensor) -> torch.Tensor:
        """LM-head logits of some hidden states, with the family's final logit softcapping (Gemma)."""
        logits = model.lm_head(hidden_states)
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def tied_head_keys(self) -> tuple[str, ...]:
        """State-dict keys of the LM head, absent from a checkpoint whose head is tied to the embeddings."""
        return ("lm_head.weight",)

    def tie_head(self, model: "PreTrainedModel") -> None:
        """Share the embedding matrix with the LM head (``tie_word_embeddings``)."""
        model.lm_head.weight = model.model.embed_tokens.weight

    def attention(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.attention_path)

    def mlp(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.mlp_path)

    def qk_norms(self, layer: nn.Module) -> tuple[nn.Module, nn.Module] | None:
        """A layer's per-head q and k RMSNorms (families with ``traits.qk_norm``), else None."""
        if not self.traits.qk_norm:
            return None
        attn = self.attention(layer)
        return attn.q_norm, attn.k_norm

    def site_modules(self, layer: nn.Module) -> dict[str, nn.Module]:
        """For each activation site, the module whose input is that site's activation."""
        attn, mlp = self.attention(layer), self.mlp(layer)
        return {
            "attn_in": attn.qkv_proj if self.traits.fused_qkv else attn.q_proj,
            "attn_out": attn.o_proj,
            "mlp_in": mlp.gate_up_proj if self.traits.fused_gate_up else mlp.gate_proj,
            "mlp_out": mlp.down_proj,
        }

    def linears(self, layer: nn.Module) -> dict[str, Projection | nn.Linear]:
        """The layer's projections by role (q, k, v, o, gate, up, down); fused ones as row slices."""
        attn, mlp = self.attention(layer), self.mlp(layer)
        out: dict[str, Any] = {}
        if self.traits.fused_qkv:
            q_size, kv_size = self._qkv_sizes(attn)
            out["q"] = Projection(attn.qkv_proj, slice(0, q_size))
            out["k"] = Projection(attn.qkv_proj, slice(q_size, q_size + kv_size))
            out["v"] = Projection(attn.qkv_proj, slice(q_size + kv_size, q_size + 2 * kv_size))
        else:
            out.update(q=attn.q_proj, k=attn.k_proj, v=attn.v_proj)
        out["o"] = attn.o_proj
        if self.traits.fused_gate_up:
            width = mlp.down_proj.in_features
            out["gate"] = Projection(mlp.gate_up_proj, slice(0, width))
            out["up"] = Projection(mlp.gate_up_proj, slice(width, 2 * width))
        else:
            out.update(gate=mlp.gate_proj, up=mlp.up_proj)
        out["down"] = mlp.down_proj
        return out

    @staticmethod
    def _qkv_sizes(attn) -> tuple[int, int]:
        total = attn.qkv_proj.out_features
        q_size = attn.o_proj.in_features
        return q_size, (total - q_size) // 2

    def layer_windows(self, config) -> list[int | None]:
        """Each layer's sliding attention window (``None``: full attention): by ``layer_types`` when the
        config has them (Qwen2/3, Gemma3), else the model-wide ``sliding_window`` (Mistral, Phi-3)."""
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None)
        if types is not None:
            return [window if kind == "sliding_attention" else None for kind in types]
        return [window] * config.num_hidden_layers

    def softmax_scales(self, config) -> list[float]:
        """Each layer's softmax scale: the dense model's (a subnet records it per layer)."""
        layers = getattr(config, "subnet_layers", None)
        if layers and all(layer.get("softmax_scale") for layer in layers):
            return [float(layer["softmax_scale"]) for layer in layers]
        if getattr(config, "query_pre_attn_scalar", None):
            return [float(config.query_pre_attn_scalar) ** -0.5] * config.num_hidden_layers
        return [float(self.head_dim(config)) ** -0.5] * config.num_hidden_layers

    # ------------------------------------------------------------------- direct ONNX graph
    #: the direct ONNX builder writes this family's graph (else export falls back to the torch exporter)
    direct_onnx: ClassVar[bool] = True
    #: rotary scalings whose tables do not depend on the sequence length (the graph holds fixed tables)
    STATIC_ROPE_TYPES: ClassVar[tuple[str, ...]] = ("default", "linear", "llama3", "yarn")

    def graph_layout(self, config) -> GraphLayout:
        """The family's graph patterns for ``config`` (dense or subnet)."""
        activation = getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", None) or "silu"
        activations = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
        from optimum_subnet.core.errors import UnsupportedModelError

        if activation not in activations:
            raise UnsupportedModelError(f"the direct ONNX builder does not support the activation {activation!r} "
                                        f"of {config.model_type}; export with builder=\"torch\"")
        return GraphLayout(
            rms_norm_eps=float(getattr(config, "rms_norm_eps", 1e-6)),
            sandwich_norms=self.traits.sandwich_norms,
            qk_norm=self.traits.qk_norm,
            activation=activations[activation],
            final_logit_softcapping=getattr(config, "final_logit_softcapping", None) or None,
            attn_logit_softcapping=getattr(config, "attn_logit_softcapping", None) or None,
            rotary_dim=int(self.head_dim(config) * getattr(config, "partial_rotary_factor", 1.0)),
        )

    def rope_kinds(self, config) -> list[str]:
        """Each layer's rotary table (a key of :meth:`rope_tables`): one table for every layer."""
        return ["global"] * config.num_hidden_layers

    def rope_tables(self, config, positions: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """cos/sin of shape (positions, rotary dim) per table, exactly as transformers computes them
        (``ROPE_INIT_FUNCTIONS``: default, llama3, linear, yarn scalings)."""
        return {"global": _rope_table(config, positions, self.STATIC_ROPE_TYPES)}

    def norm_weights(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        """A layer's RMSNorm weights by place: ``input``, ``post_attention`` (+ Gemma's ``pre_feedforward``,
        ``post_feedforward``)."""
        names = ("input", "post_attention", "pre_feedforward", "post_feedforward") if self.traits.sandwich_norms \
            else ("input", "post_attention")
        return {name: getattr(layer, f"{name}_layernorm").weight for name in names}

    def qk_norm_weights(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.attention(layer)
        return attn.q_norm.weight, attn.k_norm.weight

    def embedding_weight(self, model: "PreTrainedModel") -> torch.Tensor:
        return model.model.embed_tokens.weight

    def final_norm_weight(self, model: "PreTrainedModel") -> torch.Tensor:
        return model.model.norm.weight

    def lm_head_weight(self, model: "PreTrainedModel") -> torch.Tensor | None:
        """The LM head's weight, or ``None`` when it is the embedding matrix (tied)."""
        head = model.lm_head.weight
        embedding = self.embedding_weight(model)
        return None if head is embedding or head.data_ptr() == embedding.data_ptr() else head

    # ---------------------------------------------------------------------- running blocks
    def layer_context(self, model: "PreTrainedModel", hidden_states: torch.Tensor) -> LayerContext:
        """Masks (one per attention type the model uses) and rotary tables for a batch of full windows."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        body = model.model
        seq_len = hidden_states.shape[1]
        cache_position = torch.arange(seq_len, device=hidden_states.device)
        position_ids = cache_position.unsqueeze(0)
        mask_kwargs = dict(config=model.config, input_embeds=hidden_states, attention_mask=None,
                           cache_position=cache_position, past_key_values=None, position_ids=position_ids)
        masks = {"full_attention": create_causal_mask(**mask_kwargs)}
        if getattr(model.config, "sliding_window", None) is not None:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        body.rotary_emb.to(hidden_states.device)
        local = None
        if hasattr(body, "rotary_emb_local"):
            body.rotary_emb_local.to(hidden_states.device)
            local = body.rotary_emb_local(hidden_states, position_ids)
        return LayerContext(masks=masks, position_embeddings=body.rotary_emb(hidden_states, position_ids),
                            position_embeddings_local=local, position_ids=position_ids,
                            cache_position=cache_position)

    def layer_mask(self, layer: nn.Module, context: LayerContext):
        """The mask a layer attends with: by its attention type (Qwen2/3, Gemma3), else sliding when the
        model has a window on every layer (Mistral, Phi-3), else causal."""
        kind = getattr(layer, "attention_type", None)
        if kind is None:
            kind = "sliding_attention" if "sliding_attention" in context.masks else "full_attention"
        return context.masks[kind]

    def layer_rotary(self, layer: nn.Module, context: LayerContext) -> tuple:
        attn = self.attention(layer)
        if getattr(attn, "is_sliding", False) and context.position_embeddings_local is not None:
            return context.position_embeddings_local
        return context.position_embeddings

    def run_layer(self, layer: nn.Module, hidden_states: torch.Tensor, context: LayerContext) -> torch.Tensor:
        out = layer(hidden_states, attention_mask=self.layer_mask(layer, context),
                    position_ids=context.position_ids, cache_position=context.cache_position,
                    position_embeddings=context.position_embeddings)
        return out[0] if isinstance(out, tuple) else out

    def attention_sublayer(self, layer: nn.Module, hidden_states: torch.Tensor, context: LayerContext) -> torch.Tensor:
        """Residual stream after the attention sub-layer: ``h + attn(norm(h))`` (sandwich: ``h +
        post_norm(attn(norm(h)))``)."""
        out, _ = self.attention(layer)(
            hidden_states=layer.input_layernorm(hidden_states),
            attention_mask=self.layer_mask(layer, context),
            position_embeddings=self.layer_rotary(layer, context),
        )
        if self.traits.sandwich_norms:
            out = layer.post_attention_layernorm(out)
        return hidden_states + out

    def mlp_input(self, layer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """Input of the MLP projections given the residual stream after attention: ``norm(h)``."""
        norm = layer.pre_feedforward_layernorm if self.traits.sandwich_norms else layer.post_attention_layernorm
        return norm(hidden_states)

    # ------------------------------------------------------------------------------ surgery
    def kept_rows(self, layer_spec: LayerSpec, shape: ModelShape) -> dict[str, torch.Tensor]:
        """Dense row (output) indices kept per projection role; for o/down the kept *columns*."""
        hd, group = shape.head_dim, shape.group_size
        # numpy converts long Python int lists several times faster than torch.tensor (a per-candidate cost)
        heads = torch.from_numpy(np.array(layer_spec.kv_heads, dtype=np.int64))
        channels = torch.from_numpy(np.array(layer_spec.attention_channels, dtype=np.int64))  # (kv, width)
        kv = (heads[:, None] * hd + channels).reshape(-1)
        q_heads = heads[:, None] * group + torch.arange(group)  # each KV head's query heads, in order
        q = (q_heads[:, :, None] * hd + channels[:, None, :]).reshape(-1)
        mlp = torch.from_numpy(np.array(layer_spec.mlp_channels, dtype=np.int64))
        return {"q": q, "k": kv, "v": kv, "o": q, "gate": mlp, "up": mlp, "down": mlp}

    def subnet_layer_entries(self, model, spec: SubnetSpec) -> list[dict[str, Any]]:
        shape = spec.shape
        layers = self.decoder_layers(model)
        entries = []
        for layer in spec.layers:
            entries.append({
                "source_layer": layer.source_index,
                "num_attention_heads": layer.num_kv_heads * shape.group_size,
                "num_key_value_heads": layer.num_kv_heads,
                "head_dim": layer.head_dim,
                "rope_channels": [c.tolist() if hasattr(c, "tolist") else list(c) for c in layer.attention_channels],
                "intermediate_size": layer.intermediate_size,
                "attention_out_bias": layer.attention_out_bias,
                "mlp_out_bias": layer.mlp_out_bias,
                # the dense model's own softmax scale (its formula depends on the family)
                "softmax_scale": float(self.attention(layers[layer.source_index]).scaling),
            })
        return entries

    def subnet_config(self, model, spec: SubnetSpec):
        """The subnet's config: the dense config's sizes, plus one entry per kept layer."""
        config_cls = self.subnet_classes()[0]
        config = model.config
        data = config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path",
                    "subnet_layers"):
            data.pop(key, None)
        data["head_dim"] = spec.shape.head_dim
        sources = [layer.source_index for layer in spec.layers]
        if data.get("layer_types") is not None:  # keep each remaining layer's type (sliding / full)
            data["layer_types"] = [data["layer_types"][i] for i in sources]
        data["subnet_layers"] = self.subnet_layer_entries(model, spec)
        sub = config_cls(**data)
        sub.architectures = [self.subnet_classes()[2].__name__]
        sub._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        return sub

    def subnet_model_class(self) -> type:
        return self.subnet_classes()[2]

    def slice_state_dict(self, model, spec: SubnetSpec) -> dict[str, torch.Tensor]:
        """The subnet's weights, taken from the dense model (kept rows/columns only). Everything that is
        not a pruned projection (embeddings, norms, q/k norms, LM head) is shared, under the same name."""
        shape = spec.shape
        layers = self.decoder_layers(model)
        state: dict[str, torch.Tensor] = {}
        layer_names = {f"model.layers.{i}." for i in range(len(layers))}
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not any(name.startswith(p) for p in layer_names):
                state[name] = tensor
        for new_index, layer_spec in enumerate(spec.layers):
            layer_state = self.slice_layer_state(layers[layer_spec.source_index], layer_spec, shape)
            state.update({f"model.layers.{new_index}.{name}": tensor for name, tensor in layer_state.items()})
        return state

    def slice_layer_state(self, layer, layer_spec: LayerSpec, shape: ModelShape) -> dict[str, torch.Tensor]:
        """One subnet layer's weights (names relative to the layer), taken from dense ``layer``, on the
        device the dense layer is on (the offloaded search slices each streamed block there)."""
        state: dict[str, torch.Tensor] = {}
        rows = self.kept_rows(layer_spec, shape)
        pruned = {}
        for role, projection in self.linears(layer).items():
            module = projection.module if isinstance(projection, Projection) else projection
            pruned.setdefault(id(module), (module, []))[1].append((role, projection))
        handled = set()
        for module, roles in pruned.values():
            name = _module_name(layer, module)
            handled.add(name)
            weight, bias = self._slice_projection(roles, rows, layer_spec)
            state[name + ".weight"] = weight
            if bias is not None:
                state[name + ".bias"] = bias
        for name, tensor in layer.state_dict(keep_vars=True).items():
            module_name = name.rsplit(".", 1)[0]
            if module_name in handled:
                continue
            state[name] = self._slice_other(name, tensor, layer_spec, shape)
        return state

    def _slice_projection(self, roles, rows, layer_spec: LayerSpec):
        """One module's pruned weight (and bias): fused modules concatenate their roles' rows."""
        weights, biases = [], []
        for role, projection in roles:
            index = rows[role].to(projection.weight.device)
            if role in COLUMN_ROLES:
                weight = projection.weight.index_select(1, index)
                bias = projection.bias
                if bias is None and ((role == "o" and layer_spec.attention_out_bias)
                                     or (role == "down" and layer_spec.mlp_out_bias)):
                    bias = projection.weight.new_zeros(projection.weight.shape[0])
                return weight, bias
            weights.append(projection.weight.index_select(0, index))
            if projection.bias is not None:
                biases.append(projection.bias.index_select(0, index))
        return (torch.cat(weights) if len(weights) > 1 else weights[0],
                (torch.cat(biases) if len(biases) > 1 else biases[0]) if biases else None)

    def _slice_other(self, name: str, tensor: torch.Tensor, layer_spec: LayerSpec, shape: ModelShape):
        """Non-projection tensors of a layer: norms are kept whole, except the per-head q/k norms, whose
        weight is sliced to the channels the heads keep (all heads keep the same ones, validated)."""
        if self.traits.qk_norm and (name.endswith("q_norm.weight") or name.endswith("k_norm.weight")):
            channels = torch.as_tensor(layer_spec.attention_channels[0], device=tensor.device)
            return tensor.index_select(0, channels)
        return tensor

    # ------------------------------------------------------------------------------ saving
    def prepare_for_save(self, model) -> None:
        """Hook for families whose saved layout differs from the in-memory one (none so far)."""


def _rope_table(config, positions: int, static_types: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from optimum_subnet.core.errors import UnsupportedModelError

    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in static_types:
        raise UnsupportedModelError(f"rotary scaling {rope_type!r} depends on the sequence length; the direct ONNX "
                                    f"builder supports {', '.join(static_types)} (export with builder=\"torch\")")
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq.float())
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling).numpy(), (emb.sin() * attention_scaling).numpy()


def _module_name(root: nn.Module, module: nn.Module) -> str:
    for name, candidate in root.named_modules():
        if candidate is module:
            return name
    raise RuntimeError("projection module not found in its layer")
