"""``ORTSubnetModelForCausalLM``: ONNX Runtime inference for exported models with per-layer KV shapes.

Stock :class:`optimum.onnxruntime.ORTModelForCausalLM` sizes the KV cache from one global head
count and ``hidden_size / num_attention_heads``: a subnet whose layers have their own head size
fails at the first decode step. This subclass takes every layer's KV shape from the ONNX
session's inputs instead, so dense exports and heterogeneous subnets run alike, with and without
IO binding, on CPUExecutionProvider and CUDAExecutionProvider.

Models with Primal-Attention layers (``optimum_subnet.onnx.primal``): those layers' past / present
are two fixed-size running sums (``past_key_values.{i}.query_sum`` / ``.key_sum``, 3-D, float32)
instead of keys and values; they start as zeros and are carried like the KV cache.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from optimum.onnxruntime import ORTModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

logger = logging.getLogger(__name__)



class ORTSubnetModelForCausalLM(ORTModelForCausalLM):
    """ORT causal LM whose KV cache shapes come from the session, one per layer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._static_length: int | None = None
        self._static_buffers: tuple | None = None
        # every past / present tensor, in graph order (Optimum's name filter misses primal states)
        self.key_value_input_names = [n for n in self.input_names if n.startswith("past_key_values.")]
        self.key_value_output_names = [n for n in self.output_names if n.startswith("present.")]
        self.can_use_cache = bool(self.key_value_input_names) and bool(self.key_value_output_names)
        # name -> (kv heads, head size), read from the graph's static dims; primal states are 3-D
        self.kv_shapes: dict[str, tuple[int, int]] = {}
        self.state_names = {n for n in self.key_value_input_names if len(self.input_shapes[n]) == 3}
        for name in self.key_value_input_names:
            shape = self.input_shapes[name]
            heads, head_dim = shape[1], shape[-1]
            if not isinstance(heads, int) or not isinstance(head_dim, int):
                raise ValueError(f"ONNX input {name} has a dynamic head count or head size ({shape}); re-export it")
            self.kv_shapes[name] = (heads, head_dim)

    # ------------------------------------------------------------------------------ static KV cache
    def enable_static_cache(self, max_length: int) -> "ORTSubnetModelForCausalLM":
        """Decode into fixed, preallocated KV buffers shared by each layer's past and present.

        Needs an export whose every layer is fused into GroupQueryAttention (``--fuse-attention``),
        which then writes each step's keys/values in place (ORT's past/present buffer sharing)
        instead of concatenating a new, longer cache every step; and IO binding. ``max_length``
        bounds prompt + generated tokens.
        """
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        unfused = [n for n in self.key_value_output_names if producers.get(n) != "GroupQueryAttention"]
        if unfused:
            raise ValueError(f"a static KV cache needs every layer fused into GroupQueryAttention "
                             f"(export with fuse_attention=True); {len(unfused)} present outputs are not, e.g. {unfused[0]}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.use_io_binding = True
        self._static_length = int(max_length)
        self._static_buffers = None
        return self

    def disable_static_cache(self) -> None:
        self._static_length = None
        self._static_buffers = None

    def _is_static(self, past) -> bool:
        return (self._static_buffers is not None and past is not None
                and past[0].data_ptr() == self._static_buffers[0].data_ptr())

    def _static_forward(self, input_ids, attention_mask, past_key_values, position_ids):
        batch_size, in_len = input_ids.shape
        if attention_mask is None:
            past_len = past_key_values[1].shape[-2] if past_key_values is not None else 0
            attention_mask = torch.ones((batch_size, past_len + in_len), dtype=torch.long, device=self.device)
        total = attention_mask.shape[1]
        if total > self._static_length:
            raise ValueError(f"sequence of {total} tokens exceeds the static cache's max_length {self._static_length}")
        if not self._is_static(past_key_values):  # a new sequence: fresh buffers
            self._static_buffers = tuple(
                torch.zeros((batch_size, *self._static_dims(name)), dtype=self.dtype, device=self.device)
                for name in self.key_value_input_names)
        buffers = self._static_buffers
        if position_ids is None and "position_ids" in self.input_names:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, total - in_len:]
        model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        model_inputs = {k: v for k, v in model_inputs.items() if k in self.input_names}
        model_inputs.update(zip(self.key_value_input_names, buffers))
        presents = dict(zip(self.key_value_output_names, buffers))
        output_shapes, output_buffers = self._prepare_io_binding(
            model_inputs, known_output_shapes={n: tuple(b.shape) for n, b in presents.items()},
            known_output_buffers=presents)
        if self.device.type != "cpu":
            self._io_binding.synchronize_inputs()
        self.session.run_with_iobinding(self._io_binding)
        if self.device.type != "cpu":
            self._io_binding.synchronize_outputs()
        logits = output_buffers["logits"].view(output_shapes["logits"])
        views = tuple(buffer[:, :, :total] for buffer in buffers)  # what generate() sees: the filled part
        return CausalLMOutputWithPast(logits=logits, past_key_values=tuple(views[i : i + 2]
                                                                           for i in range(0, len(views), 2)))

    def _static_dims(self, name: str) -> tuple[int, int, int]:
        heads, head_dim = self.kv_shapes[name]
        return heads, self._static_length, head_dim

    def forward(self, input_ids, attention_mask=None, past_key_values=None, position_ids=None, use_cache=None,
                **kwargs) -> CausalLMOutputWithPast:
        use_torch = isinstance(input_ids, torch.Tensor)
        self.raise_on_numpy_input_io_binding(use_torch)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if use_cache and not self.can_use_cache:
            raise ValueError("use_cache=True but this ONNX model was exported without a KV cache "
                             "(re-export with task text-generation-with-past)")
        if past_key_values is not None and isinstance(past_key_values[0], (tuple, list)):
            past_key_values = tuple(t for pair in past_key_values for t in pair)
        if self._static_length is not None and use_torch and use_cache:
            return self._static_forward(input_ids, attention_mask, past_key_values, position_ids)

        batch_size, in_len = input_ids.shape
        past_len = self._past_length(past_key_values, attention_mask, in_len)
        out_len = past_len + in_len
        if attention_mask is None:
            attention_mask = (torch.ones if use_torch else np.ones)((batch_size, out_len), dtype=torch.long if use_torch
                                                                    else np.int64)
            if use_torch:
                attention_mask = attention_mask.to(self.device)
        if position_ids is None and "position_ids" in self.input_names:
            if use_torch:  # as transformers: positions count only attended tokens (left padding)
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past_len:]
            else:
                position_ids = np.maximum(attention_mask.astype(np.int64).cumsum(-1) - 1, 0)[:, past_len:]

        if self.key_value_input_names and past_key_values is None:
            past_key_values = tuple(self._empty_past(name, batch_size, use_torch) for name in self.key_value_input_names)

        model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        model_inputs = {k: v for k, v in model_inputs.items() if k in self.input_names}
        if self.key_value_input_names:
            model_inputs.update(zip(self.key_value_input_names, past_key_values))

        if self.use_io_binding:
            known_output_shapes = {}
            outputs_to_not_bind = set()
            if use_cache:
                for name in self.key_value_output_names:
                    past_name = name.replace("present.", "past_key_values.")
                    heads, head_dim = self.kv_shapes[past_name]
                    known_output_shapes[name] = ((batch_size, heads, head_dim) if past_name in self.state_names
                                                 else (batch_size, heads, out_len, head_dim))
            else:
                outputs_to_not_bind.update(self.key_value_output_names)
            output_shapes, output_buffers = self._prepare_io_binding(
                model_inputs, outputs_to_not_bind=outputs_to_not_bind, known_output_shapes=known_output_shapes)
            if self.device.type != "cpu":
                self._io_binding.synchronize_inputs()
            self.session.run_with_iobinding(self._io_binding)
            if self.device.type != "cpu":
                self._io_binding.synchronize_outputs()
            logits = output_buffers.pop("logits").view(output_shapes["logits"])
            presents = (tuple(output_buffers.pop(n).view(output_shapes[n]) for n in self.key_value_output_names)
                        if use_cache else None)
        else:
            onnx_inputs = self._prepare_onnx_inputs(use_torch, model_inputs)
            outputs = self._prepare_onnx_outputs(use_torch, self.session.run(None, onnx_inputs))
            logits = outputs.pop("logits")
            presents = tuple(outputs.pop(n) for n in self.key_value_output_names) if use_cache else None

        if presents is not None:
            presents = tuple(presents[i : i + 2] for i in range(0, len(presents), 2))
        return CausalLMOutputWithPast(logits=logits, past_key_values=presents)

    def _past_length(self, past_key_values, attention_mask, in_len: int) -> int:
        """Tokens already in the cache: from the attention mask when given, else from a KV layer's
        values (a primal layer's state has no length)."""
        if past_key_values is None:
            return 0
        if attention_mask is not None:
            return attention_mask.shape[1] - in_len
        for name, value in zip(self.key_value_input_names, past_key_values):
            if name not in self.state_names:
                return value.shape[-2]
        raise ValueError("every layer keeps a Primal-Attention state: pass the attention_mask to give the past length")

    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        """Beam search: every past tensor (KV or primal state) has the batch first."""
        return tuple(tuple(t.index_select(0, beam_idx.to(t.device)) for t in layer) for layer in past_key_values)

    def _empty_past(self, name: str, batch_size: int, use_torch: bool):
        heads, head_dim = self.kv_shapes[name]
        if name in self.state_names:  # the running sums before the first token: zeros, float32
            if use_torch:
                return torch.zeros((batch_size, heads, head_dim), dtype=torch.float32, device=self.device)
            return np.zeros((batch_size, heads, head_dim), dtype=np.float32)
        if use_torch:
            return torch.zeros((batch_size, heads, 0, head_dim), dtype=self.dtype, device=self.device)
        np_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        return np.zeros((batch_size, heads, 0, head_dim), dtype=np_dtype)


def install_dispatch() -> None:
    """Make stock ``ORTModelForCausalLM.from_pretrained`` hand subnet exports to this class.

    Called once when the plugin is imported (like ``AutoConfig.register``): without it the stock
    class would build the KV cache from global sizes and fail at the first decode step. Other model
    types are untouched.
    """
    stock = ORTModelForCausalLM.__dict__["_from_pretrained"]
    if getattr(stock.__func__, "_optimum_subnet_dispatch", False):
        return
    stock_fn = stock.__func__

    def _from_pretrained(cls, model_id, config, *args, **kwargs):
        from optimum_subnet.families import subnet_model_types

        from optimum_subnet.primal.registration import family_of

        model_type = getattr(config, "model_type", None)
        primal = family_of(model_type) is not None and model_type == family_of(model_type).model_type
        if cls is ORTModelForCausalLM and (model_type in subnet_model_types() or primal):
            logger.info("%s has per-layer KV shapes: loading it with ORTSubnetModelForCausalLM", model_id)
            cls = ORTSubnetModelForCausalLM
        return stock_fn(cls, model_id, config, *args, **kwargs)

    wrapped = classmethod(_from_pretrained)
    wrapped.__func__._optimum_subnet_dispatch = True
    ORTModelForCausalLM._from_pretrained = wrapped
