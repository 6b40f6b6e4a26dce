"""Token generation on a directly built decoder graph (:mod:`optimum_subnet.onnx.builder`).

Everything the graph reads lives in fixed buffers on the session's device, bound once with IO binding:
token ids, positions, the flat index of the positions that get logits, each layer's KV buffer (past and
present bound to the same memory: GroupQueryAttention writes the new keys/values in place), and the logits.
The prompt (prefill) runs as a normal ONNX Runtime call; every decode step runs the same bound call,
which on CUDA is captured once as a CUDA graph (``enable_cuda_graph``; the ``gpu_graph_id`` run option
marks the prefill as not captured, as onnxruntime-genai does) and replayed afterwards. Between steps
the next token is chosen on the device (argmax, or seeded sampling), written into the bound ids buffer,
and the positions advance by one: the only host round trip per step is reading the sampled token.

Batches may be padded on either side: each row's real tokens (``attention_mask``) are packed to the
left of the prompt buffer (GroupQueryAttention keeps each row's cache from position 0, its length given
by ``seqlens_k``, which the graph takes from the largest position of the row), so a padded row
generates exactly what it would alone. ``generate`` returns ``(batch, prompt + new)`` in the caller's
layout, the prompt as given.

On the CPU the same code runs without the CUDA graph (this is how the tests check it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimum_subnet.core.errors import SubnetError

logger = logging.getLogger(__name__)

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32}
_ONNX_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
#: generation settings the generator implements (anything else set to a non-default value is refused)
SUPPORTED_SETTINGS = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p",
                      "eos_token_id", "pad_token_id", "seed")


@dataclass
class SamplingConfig:
    """How the next token is chosen: greedy (``do_sample=False``) or seeded sampling."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.do_sample:
            if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
                raise SubnetError(f"temperature must be > 0 when sampling, got {self.temperature!r}")
            if not (isinstance(self.top_k, int) and self.top_k >= 0):
                raise SubnetError(f"top_k must be an integer >= 0, got {self.top_k!r}")
            if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
                raise SubnetError(f"top_p must be in (0, 1], got {self.top_p!r}")


def is_direct_graph(path: str | Path) -> bool:
    from optimum_subnet.onnx.builder.decoder import read_graph_info

    return read_graph_info(path) is not None


def create_session(path: str | Path, provider: str = "cpu", *, cuda_graph: bool | None = None, device_id: int = 0,
                   stream: "torch.cuda.Stream | None" = None, threads: int | None = None):
    """An ONNX Runtime session for a direct graph: on CUDA with CUDA-graph capture (default) and, when
    ``stream`` is given, ONNX Runtime computing on that torch stream (no cross-stream syncs per step)."""
    import onnxruntime as ort

    from optimum_subnet.onnx.export import check_provider

    name = "CUDAExecutionProvider" if provider in ("cuda", "CUDAExecutionProvider") else "CPUExecutionProvider"
    check_provider(name)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if name == "CPUExecutionProvider":
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # kSameAsRequested: the arena grows by what is asked (the default doubles, which wastes GBs at 7B)
    cuda_options: dict[str, str] = {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested"}
    if cuda_graph is None or cuda_graph:
        cuda_options["enable_cuda_graph"] = "1"
    if stream is not None:
        cuda_options["user_compute_stream"] = str(stream.cuda_stream)
    return ort.InferenceSession(str(path), options, providers=[("CUDAExecutionProvider", cuda_options),
                                                               "CPUExecutionProvider"])


class ORTGenerator:
    """``ORTGenerator(session, max_length, batch_size).generate(input_ids, attention_mask, max_new_tokens)``.

    ``session``: an ONNX Runtime session of a direct graph (:func:`create_session`). ``max_length``:
    prompt + new tokens of the longest row (sizes the KV buffers); ``batch_size``: rows the buffers hold
    (a smaller batch runs padded with copies of its first row; a larger one is refused: with a CUDA
    graph the shapes are fixed at capture). ``cuda_graph``: whether the session was created with
    ``enable_cuda_graph`` (decode steps are then captured/replayed). ``stream``: the torch stream the
    session computes on (``user_compute_stream``), if any.
    """

    def __init__(self, session, max_length: int, batch_size: int = 1, *, cuda_graph: bool = False,
                 stream: "torch.cuda.Stream | None" = None, max_positions: int | None = None):
        self.session = session
        providers = session.get_providers()
        self.on_cuda = providers[0] == "CUDAExecutionProvider"
        if self.on_cuda:
            options = session.get_provider_options().get("CUDAExecutionProvider", {})
            self.device = torch.device("cuda", int(options.get("device_id", 0)))
        else:
            self.device = torch.device("cpu")
        inputs = {i.name: i for i in session.get_inputs()}
        required = {"input_ids", "position_ids", "total_sequence_length", "logits_index"}
        if not required <= set(inputs):
            raise SubnetError('this ONNX model was exported without the fused decoder graph: re-export it with '
                              'builder="direct"')
        self.kv_names = [n for n in inputs if n.startswith("past_key_values.")]
        first = inputs[self.kv_names[0]]
        self.dtype = _ONNX_TYPES[first.type]
        self.vocab = next(o.shape[2] for o in session.get_outputs() if o.name == "logits")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise SubnetError(f"max_length must be an integer >= 2, got {max_length!r}")
        if max_positions is not None and max_length > max_positions:
            raise SubnetError(f"max_length {max_length} exceeds the {max_positions} positions the graph's rotary "
                              f"tables hold: use max_length <= {max_positions}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise SubnetError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.max_length, self.batch_size = max_length, batch_size
        self.cuda_graph = bool(cuda_graph and self.on_cuda)
        self.stream = stream if self.on_cuda else None
        # ONNX Runtime keeps one captured graph per id for the session's lifetime: each generator (its own
        # buffers) takes a new id, counted on the session itself
        self.graph_id = getattr(session, "_optimum_subnet_graph_ids", 0) + 1
        session._optimum_subnet_graph_ids = self.graph_id
        #: seconds of the last ``generate``: prefill, and the decode steps after the first token
        self.timing: dict[str, float] = {}
        with self._on_stream():
            self._allocate(inputs)

    # ------------------------------------------------------------------------------------ setup
    def _on_stream(self):
        import contextlib

        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _allocate(self, inputs) -> None:
        import onnxruntime as ort

        b, dev = self.batch_size, self.device
        self.kv = {}
        for name in self.kv_names:
            heads, dim = inputs[name].shape[1], inputs[name].shape[3]
            self.kv[name] = torch.zeros((b, heads, self.max_length, dim), dtype=self.dtype, device=dev)
        self.ids = torch.zeros((b, 1), dtype=torch.int64, device=dev)
        self.positions = torch.zeros((b, 1), dtype=torch.int64, device=dev)
        self.logits = torch.zeros((b, 1, self.vocab), dtype=self.dtype, device=dev)
        self.decode_index = torch.arange(b, dtype=torch.int64, device=dev).view(b, 1)
        self._decode_total = np.array(self.max_length, dtype=np.int32)
        self.decode_binding = self.session.io_binding()
        self._bind(self.decode_binding, self.ids, self.positions, self._decode_total, self.decode_index)
        self.prefill_options = ort.RunOptions()
        self.decode_options = ort.RunOptions()
        if self.cuda_graph:
            self.prefill_options.add_run_config_entry("gpu_graph_id", "-1")
            self.decode_options.add_run_config_entry("gpu_graph_id", str(self.graph_id))
        if self.stream is not None:  # same stream as torch: no need to wait for ONNX Runtime on the host
            for options in (self.prefill_options, self.decode_options):
                options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _bind_tensor(self, binding, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        kind = "cuda" if tensor.is_cuda else "cpu"
        index = tensor.device.index or 0
        bind = binding.bind_output if output else binding.bind_input
        bind(name, kind, index, _NP[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())

    def _bind(self, binding, ids, positions, total: np.ndarray, logits_index) -> None:
        self._bind_tensor(binding, "input_ids", ids)
        self._bind_tensor(binding, "position_ids", positions)
        binding.bind_cpu_input("total_sequence_length", total)
        self._bind_tensor(binding, "logits_index", logits_index)
        for name, buffer in self.kv.items():
            self._bind_tensor(binding, name, buffer)
            self._bind_tensor(binding, name.replace("past_key_values.", "present."), buffer, output=True)
        self._bind_tensor(binding, "logits", self.logits, output=True)

    def _run(self, binding, options) -> None:
        if self.on_cuda and self.stream is None:
            torch.cuda.current_stream(self.device).synchronize()  # our buffer updates, before ONNX Runtime reads
        self.session.run_with_iobinding(binding, options)

    def _sync(self) -> float:
        if self.on_cuda:
            (self.stream or torch.cuda.current_stream(self.device)).synchronize()
        return time.perf_counter()

    # ---------------------------------------------------------------------------------- helpers
    @staticmethod
    def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """Each row's attended tokens moved to the front, in order: (packed ids, lengths, order)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.to(torch.bool)
        lengths = keep.sum(1)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        return input_ids.gather(1, order), lengths, order

    def _choose(self, logits: torch.Tensor, sampling: SamplingConfig, generator) -> torch.Tensor:
        """(B, V) logits -> (B,) next tokens, on the device."""
        if not sampling.do_sample:
            return logits.argmax(-1)
        scores = logits.float() / sampling.temperature
        if sampling.top_k:
            kth = scores.topk(min(sampling.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if sampling.top_p < 1.0:
            ordered, index = scores.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) > sampling.top_p  # keep the token that crosses top_p
            scores = scores.scatter(-1, index, ordered.masked_fill(drop, float("-inf")))
        return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)

    # --------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
                 sampling: SamplingConfig | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None) -> torch.Tensor:
        """``(batch, prompt + new)`` token ids: the prompt as given, then the generated tokens (rows that
        finished early, at ``eos_token_id``, continue with ``pad_token_id`` as in transformers)."""
        sampling = sampling or SamplingConfig()
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SubnetError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise SubnetError(f"input_ids must be (batch, prompt length) with a non-empty prompt, got "
                              f"{tuple(input_ids.shape)}")
        batch = input_ids.shape[0]
        if batch > self.batch_size:
            raise SubnetError(f"a batch of {batch} does not fit this generator's "
                              f"{'captured CUDA graph' if self.cuda_graph else 'buffers'} (batch_size="
                              f"{self.batch_size}): create the generator with batch_size={batch}")
        out_device = input_ids.device
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        packed, lengths, _ = self.pack(ids, mask)
        if int(lengths.min()) < 1:
            raise SubnetError("a row of the batch has no attended token (its attention_mask is all zeros)")
        longest = int(lengths.max())
        if longest + max_new_tokens > self.max_length:
            raise SubnetError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds max_length "
                              f"{self.max_length}: use max_length >= {longest + max_new_tokens} (or a shorter "
                              "prompt / fewer new tokens)")
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        if eos and pad_token_id is None:
            pad_token_id = eos[0]
        generator = None
        if sampling.do_sample:
            generator = torch.Generator(device=self.device)
            if sampling.seed is not None:
                generator.manual_seed(int(sampling.seed))
            else:
                generator.seed()
        with self._on_stream():
            if self.stream is not None:
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
            rows = self.batch_size
            if batch < rows:  # fill the fixed batch with copies of the first row (their outputs are dropped)
                fill = rows - batch
                packed = torch.cat([packed, packed[:1].expand(fill, -1)])
                lengths = torch.cat([lengths, lengths[:1].expand(fill)])
            width = longest
            prompt = packed[:, :width].contiguous()
            steps = torch.arange(width, device=self.device)
            positions = torch.minimum(steps[None, :], (lengths - 1)[:, None]).contiguous()
            index = (torch.arange(rows, device=self.device) * width + lengths - 1).view(rows, 1).contiguous()
            total = np.array(width, dtype=np.int32)
            binding = self.session.io_binding()
            self._bind(binding, prompt, positions, total, index)
            start = self._sync()
            self._run(binding, self.prefill_options)
            generated = torch.empty((rows, max_new_tokens), dtype=torch.int64, device=self.device)
            finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
            eos_t = torch.tensor(eos, dtype=torch.int64, device=self.device) if eos else None
            self.positions.copy_(lengths.view(rows, 1))
            produced = 0
            decode_start = start
            fast = not sampling.do_sample and eos_t is None
            for step in range(max_new_tokens):
                if step > 0:
                    self._run(self.decode_binding, self.decode_options)
                if fast:  # greedy without EOS: argmax straight into the bound ids buffer (fewest launches)
                    torch.argmax(self.logits[:, 0], dim=-1, keepdim=True, out=self.ids)
                    generated[:, step].copy_(self.ids[:, 0])
                else:
                    token = self._choose(self.logits[:, 0], sampling, generator)
                    if eos_t is not None:
                        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
                        finished |= torch.isin(token, eos_t)
                    generated[:, step] = token
                    self.ids.copy_(token.view(rows, 1))
                if step > 0:
                    self.positions.add_(1)
                produced = step + 1
                if step == 0:
                    decode_start = self._sync()
                    self.timing["prefill_s"] = decode_start - start
                # the sampled token's one round trip per step: stop once every row has finished
                if eos_t is not None and bool(finished[:batch].all()):
                    break
            end = self._sync()
            self.timing.update(decode_s=end - decode_start, decode_steps=max(produced - 1, 0))
            result = generated[:batch, :produced]
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return torch.cat([input_ids, result.to(out_device)], dim=1)

    # ------------------------------------------------------------------------------------ forward
    @torch.no_grad()
    def logits_for(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, length, vocab) logits of every position of the prompt (one prefill; no generation)."""
        batch, length = input_ids.shape
        if batch > self.batch_size or length > self.max_length:
            raise SubnetError(f"a batch of {batch} x {length} tokens does not fit this generator "
                              f"(batch_size={self.batch_size}, max_length={self.max_length})")
        ids = input_ids.to(self.device)
        packed, lengths, order = self.pack(ids, attention_mask.to(self.device) if attention_mask is not None else None)
        rows = self.batch_size
        if batch < rows:
            packed = torch.cat([packed, packed[:1].expand(rows - batch, -1)])
            lengths = torch.cat([lengths, lengths[:1].expand(rows - batch)])
            order = torch.cat([order, order[:1].expand(rows - batch, -1)])
        lengths = lengths.clamp_min(1)
        steps = torch.arange(length, device=self.device)
        positions = torch.minimum(steps[None, :], (lengths - 1)[:, None]).contiguous()
        # original position j of row b holds packed slot k where order[b, k] = j
        slot = torch.empty_like(order)
        slot.scatter_(1, order, steps[None, :].expand(rows, -1).contiguous())
        index = (torch.arange(rows, device=self.device)[:, None] * length + slot).contiguous()
        logits = torch.empty((rows, length, self.vocab), dtype=self.dtype, device=self.device)
        with self._on_stream():
            if self.stream is not None:
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
            binding = self.session.io_binding()
            self._bind(binding, packed.contiguous(), positions, np.array(length, dtype=np.int32), index)
            self._bind_tensor(binding, "logits", logits, output=True)
            self._run(binding, self.prefill_options)
            self._sync()
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return logits[:batch].to(input_ids.device)


def generation_settings(generation_config, kwargs: dict[str, Any]) -> tuple[dict[str, Any], SamplingConfig]:
    """Split ``generate`` keyword arguments (over the model's generation config) into what the generator
    takes; refuse settings it does not implement (one line, naming them)."""
    from transformers import GenerationConfig

    defaults = GenerationConfig()
    config = generation_config or defaults
    values = {key: getattr(config, key, None) for key in ("max_new_tokens", "max_length", "do_sample", "temperature",
                                                           "top_k", "top_p", "eos_token_id", "pad_token_id")}
    values.update({k: v for k, v in kwargs.items() if k in SUPPORTED_SETTINGS})
    unsupported = []
    for key, value in kwargs.items():
        if key in SUPPORTED_SETTINGS or key == "use_cache":
            continue
        if key in ("return_dict_in_generate", "output_scores", "output_logits") and not value:
            continue
        if key == "num_beams" and value in (None, 1):
            continue
        if key == "repetition_penalty" and value in (None, 1.0):
            continue
        if key == "num_return_sequences" and value in (None, 1):
            continue
        if key == "streamer" and value is None:
            continue
        unsupported.append(key)
    if getattr(config, "repetition_penalty", 1.0) not in (None, 1.0) and "repetition_penalty" not in kwargs:
        unsupported.append("repetition_penalty (from the generation config)")
    if unsupported:
        raise SubnetError(f"generate on a directly built graph does not support {', '.join(sorted(unsupported))}; "
                          f"it supports {', '.join(SUPPORTED_SETTINGS)} (export with builder=\"torch\" for "
                          "transformers' full generate)")
    do_sample = bool(values.get("do_sample"))
    sampling = SamplingConfig(do_sample=do_sample,
                              temperature=1.0 if values.get("temperature") is None else values["temperature"],
                              top_k=int(values.get("top_k") or 0) if do_sample else 0,
                              top_p=1.0 if values.get("top_p") is None else values["top_p"],
                              seed=kwargs.get("seed"))
    return values, sampling
