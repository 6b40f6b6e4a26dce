"""``ORTSubnetModelForCausalLM``: ONNX Runtime inference for exported models with per-layer KV shapes.

Stock :class:`optimum.onnxruntime.ORTModelForCausalLM` sizes the KV cache from one global head
count and ``hidden_size / num_attention_heads``: a subnet whose layers have their own head size
fails at the first decode step. This subclass takes every layer's KV shape from the ONNX
session's inputs instead, so dense exports and heterogeneous subnets run alike, with and without
IO binding, on CPUExecutionProvider and CUDAExecutionProvider.

A folder written by the direct builder (the default export, :mod:`optimum_subnet.onnx.builder`) is run
by :class:`~optimum_subnet.runtime.generator.ORTGenerator`: ``generate`` decodes into fixed buffers with
IO binding and, on CUDA, each decode step replayed from a CUDA graph (the session is created with
``enable_cuda_graph`` and computes on a torch stream of its own); ``forward`` returns the logits of a
whole prompt. Torch-exported folders keep the transformers ``generate`` loop below (slower).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from optimum.onnxruntime import ORTModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

logger = logging.getLogger(__name__)



#: KV buffers of a generator made by ``generate`` are sized up to a multiple of this (fewer re-captures)
LENGTH_STEP = 256


def _onnx_file(model_id, file_name) -> Path | None:
    folder = Path(model_id)
    if not folder.is_dir():
        return None
    if file_name:
        return folder / file_name
    files = sorted(folder.glob("*.onnx"))
    return folder / "model.onnx" if (folder / "model.onnx").is_file() else (files[0] if files else None)


def _is_direct(path: Path | None) -> bool:
    if path is None or not path.is_file():
        return False
    from optimum_subnet.runtime.generator import is_direct_graph

    try:
        return is_direct_graph(path)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the session, not here
        return False


class ORTSubnetModelForCausalLM(ORTModelForCausalLM):
    """ORT causal LM whose KV cache shapes come from the session, one per layer."""

    @classmethod
    def _from_pretrained(cls, model_id, config, *args, **kwargs):
        """Direct graphs on CUDA: the session captures CUDA graphs and computes on a torch stream of ours."""
        stream = None
        provider = kwargs.get("provider", "CPUExecutionProvider")
        if provider == "CUDAExecutionProvider" and _is_direct(_onnx_file(model_id, kwargs.get("file_name"))):
            options = dict(kwargs.get("provider_options") or {})
            device = torch.device("cuda", int(options.get("device_id", 0)))
            stream = torch.cuda.Stream(device)
            options.setdefault("enable_cuda_graph", "1")
            options["user_compute_stream"] = str(stream.cuda_stream)
            kwargs["provider_options"] = options
        model = super()._from_pretrained(model_id, config, *args, **kwargs)
        model._stream = stream
        return model

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from optimum_subnet.onnx.builder.decoder import read_graph_info

        #: the builder's metadata when the graph was built directly (None: a torch export)
        self.direct_graph = read_graph_info(self.path)
        self._generator = None
        self._stream = getattr(self, "_stream", None)
        self._static_length: int | None = None
        self._static_buffers: tuple | None = None
        # name -> (kv heads, head size), read from the graph's static dims
        self.kv_shapes: dict[str, tuple[int, int]] = {}
        for name in self.key_value_input_names:
            shape = self.input_shapes[name]
            heads, head_dim = shape[1], shape[3]
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

        if self.direct_graph is not None:
            raise ValueError("a directly built graph always decodes into fixed KV buffers: call generate() (or use "
                             "ORTGenerator); enable_static_cache is for torch exports")
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

    # --------------------------------------------------------------------------- direct graphs
    def generator(self, batch_size: int, max_length: int):
        """The :class:`ORTGenerator` on this session for ``batch_size`` rows and ``max_length`` tokens
        (reused while it fits; the KV buffers are sized up to a multiple of 256 tokens)."""
        from optimum_subnet.core.errors import SubnetError
        from optimum_subnet.runtime.generator import ORTGenerator

        if self.direct_graph is None:
            raise SubnetError(f"{self.path.parent} was exported without the fused decoder graph: re-export it with "
                              'builder="direct"')
        limit = self.direct_graph.get("max_positions")
        current = self._generator
        if current is not None and current.batch_size == batch_size and current.max_length >= max_length:
            return current
        if limit is not None and max_length > limit:
            raise SubnetError(f"{max_length} tokens exceed the {limit} positions this graph holds: generate at most "
                              f"{limit} tokens in all (prompt + new)")
        length = -(-max_length // LENGTH_STEP) * LENGTH_STEP
        length = min(length, limit) if limit else length
        self._generator = None  # release the old buffers first
        self._generator = ORTGenerator(self.session, length, batch_size,
                                       cuda_graph=self.device.type == "cuda" and self._uses_cuda_graph(),
                                       stream=self._stream, max_positions=limit)
        return self._generator

    def _uses_cuda_graph(self) -> bool:
        options = self.session.get_provider_options().get("CUDAExecutionProvider", {})
        return str(options.get("enable_cuda_graph", "0")) in ("1", "True", "true")

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """transformers-style ``generate``; on a directly built graph it runs :class:`ORTGenerator`
        (greedy or sampling; ``max_new_tokens`` / ``max_length``, ``eos_token_id``, ``pad_token_id``,
        ``temperature``, ``top_k``, ``top_p``, ``seed``)."""
        if self.direct_graph is None:
            if generation_config is not None:
                kwargs["generation_config"] = generation_config
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        from optimum_subnet.core.errors import SubnetError
        from optimum_subnet.runtime.generator import generation_settings

        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise SubnetError("generate needs input_ids")
        values, sampling = generation_settings(generation_config or self.generation_config, kwargs)
        prompt = int(attention_mask.sum(1).max()) if attention_mask is not None else input_ids.shape[1]
        new = values.get("max_new_tokens")
        if new is None:
            new = (values.get("max_length") or 20) - input_ids.shape[1]
        limit = self.direct_graph.get("max_positions")
        if limit is not None and prompt + max(int(new), 1) > limit:
            raise SubnetError(f"prompt of {prompt} tokens + max_new_tokens {new} exceeds the {limit} positions this "
                              "model holds: shorten the prompt or lower max_new_tokens")
        generator = self.generator(input_ids.shape[0], prompt + max(int(new), 1))
        return generator.generate(input_ids, attention_mask, max_new_tokens=int(new), sampling=sampling,
                                  eos_token_id=values.get("eos_token_id"), pad_token_id=values.get("pad_token_id"))

    def forward(self, input_ids, attention_mask=None, past_key_values=None, position_ids=None, use_cache=None,
                **kwargs) -> CausalLMOutputWithPast:
        if self.direct_graph is not None:
            if past_key_values is not None:
                raise ValueError("a directly built graph keeps its KV cache in the generator's buffers: call "
                                 "generate() (or ORTGenerator); step-by-step forward with past_key_values needs an "
                                 "export with builder=\"torch\"")
            ids = torch.as_tensor(input_ids)
            mask = None if attention_mask is None else torch.as_tensor(attention_mask)
            logits = self.generator(ids.shape[0], ids.shape[1]).logits_for(ids, mask)
            return CausalLMOutputWithPast(logits=logits, past_key_values=None)
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
        past_len = past_key_values[1].shape[-2] if past_key_values is not None else 0
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
                    heads, head_dim = self.kv_shapes[name.replace("present.", "past_key_values.")]
                    known_output_shapes[name] = (batch_size, heads, out_len, head_dim)
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

    def _empty_past(self, name: str, batch_size: int, use_torch: bool):
        heads, head_dim = self.kv_shapes[name]
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

        if cls is ORTModelForCausalLM:
            if getattr(config, "model_type", None) in subnet_model_types():
                logger.info("%s has per-layer KV shapes: loading it with ORTSubnetModelForCausalLM", model_id)
                return ORTSubnetModelForCausalLM._from_pretrained(model_id, config, *args, **kwargs)
            if _is_direct(_onnx_file(model_id, kwargs.get("file_name"))):
                logger.info("%s is a directly built decoder graph: loading it with ORTSubnetModelForCausalLM",
                            model_id)
                return ORTSubnetModelForCausalLM._from_pretrained(model_id, config, *args, **kwargs)
        return stock_fn(cls, model_id, config, *args, **kwargs)

    wrapped = classmethod(_from_pretrained)
    wrapped.__func__._optimum_subnet_dispatch = True
    ORTModelForCausalLM._from_pretrained = wrapped
