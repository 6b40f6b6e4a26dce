"""The subnet spec: which parts of a dense model a subnet keeps.

A :class:`SubnetSpec` is what the search produces and what surgery, reformation, export and reports
consume. It is saved as ``subnet_config.json`` beside the subnet's weights.

Per kept decoder block (``LayerSpec``):

* ``kv_heads``: kept key/value heads (GQA groups). Our search keeps every head and prunes channels
  *inside* heads (paper, Sec. 3.1); head pruning is there for baselines such as FLAP.
* ``attention_channels``: for each kept KV head, the kept channels of that head (indices in
  ``[0, head_dim)``). The same mask is used for the rows of W_K and W_V of that KV head, for the rows
  of W_Q of every query head in its group, and for the matching columns of W_O. Every kept head of a
  layer keeps the same number of channels, so the layer has one head size (batched kernels need it).
  For RoPE models the channels come in rotary pairs ``(i, i + head_dim / 2)`` so that the kept
  channels rotate at their original frequencies.
* ``mlp_channels``: kept intermediate channels (rows of W_gate/W_up, columns of W_down).

Layers absent from ``layers`` are dropped (depth pruning). Hidden size, norms, embeddings and the
LM head are never pruned.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from optimum_subnet.algorithms import rope
from optimum_subnet.core.errors import InvalidSpecError

SPEC_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelShape:
    """The dense architecture's sizes, as far as pruning and parameter accounting need them."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    rope: bool = True
    #: q/k/v carry biases, o does not (Qwen2); ``attention_bias`` means all four do (LLaMA's flag)
    qkv_bias: bool = False
    #: per-head q/k RMSNorm weights (head_dim each, shared by the heads; Qwen3, Gemma3)
    qk_norm: bool = False
    #: RMSNorms per decoder layer (2; Gemma's sandwich norms: 4)
    norms_per_layer: int = 2
    #: channels of a head that rotate when fewer than all (partial rotary, Phi-3); 0: all of them
    rotary_dim: int = 0

    @property
    def group_size(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def rotated_channels(self) -> int:
        """Channels per head that rotate (RoPE pairs ``(c, c + r/2)`` for ``c < r/2``)."""
        return self.rotary_dim or self.head_dim

    def embedding_params(self) -> int:
        """Parameters outside the decoder blocks: token embedding, LM head (unless tied), final norm."""
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return emb + head + self.hidden_size

    def attention_params(self, num_kv_heads: int, head_dim: int, out_bias: bool = False) -> int:
        nq = num_kv_heads * self.group_size
        weights = 2 * self.hidden_size * nq * head_dim + 2 * self.hidden_size * num_kv_heads * head_dim
        bias = 0
        if self.attention_bias or self.qkv_bias:
            bias += nq * head_dim + 2 * num_kv_heads * head_dim
        if self.attention_bias or out_bias:
            bias += self.hidden_size
        norms = 2 * head_dim if self.qk_norm else 0
        return weights + bias + norms

    def mlp_params(self, width: int, out_bias: bool = False) -> int:
        weights = 3 * self.hidden_size * width
        bias = 0
        if self.mlp_bias:
            bias = 2 * width + self.hidden_size
        elif out_bias:
            bias = self.hidden_size
        return weights + bias

    def norm_params(self) -> int:
        return self.norms_per_layer * self.hidden_size

    def dense_block_params(self) -> int:
        return self.num_layers * (
            self.norm_params()
            + self.attention_params(self.num_key_value_heads, self.head_dim)
            + self.mlp_params(self.intermediate_size)
        )

    def dense_params(self) -> int:
        return self.embedding_params() + self.dense_block_params()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerSpec:
    """One kept decoder block. Index lists are lists of ints; a search candidate's (handed to the fitness,
    never saved as such) may be numpy arrays instead: ``attention_channels`` (kv heads x channels) and
    ``mlp_channels``, which :meth:`SubnetSpec.to_dict` turns into lists."""

    source_index: int
    kv_heads: list[int]
    attention_channels: list[list[int]]
    mlp_channels: list[int]
    attention_out_bias: bool = False
    mlp_out_bias: bool = False

    @property
    def head_dim(self) -> int:
        return len(self.attention_channels[0]) if len(self.attention_channels) else 0

    @property
    def num_kv_heads(self) -> int:
        return len(self.kv_heads)

    @property
    def intermediate_size(self) -> int:
        return len(self.mlp_channels)

    def head_dim_set(self) -> set[tuple[int, ...]]:
        """The distinct channel sets the layer's kept KV heads keep."""
        return {tuple(c) for c in self.attention_channels}

    def params(self, shape: ModelShape) -> int:
        return (
            shape.norm_params()
            + shape.attention_params(self.num_kv_heads, self.head_dim, self.attention_out_bias)
            + shape.mlp_params(self.intermediate_size, self.mlp_out_bias)
        )


@dataclass
class SubnetSpec:
    """Which heads, channels and layers of a dense model a subnet keeps (see module docstring)."""

    shape: ModelShape
    layers: list[LayerSpec]
    metadata: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------- builders
    @classmethod
    def dense(cls, shape: ModelShape) -> "SubnetSpec":
        """The spec that keeps everything (reproduces the dense model exactly)."""
        layers = [
            LayerSpec(
                source_index=i,
                kv_heads=list(range(shape.num_key_value_heads)),
                attention_channels=[list(range(shape.head_dim)) for _ in range(shape.num_key_value_heads)],
                mlp_channels=list(range(shape.intermediate_size)),
            )
            for i in range(shape.num_layers)
        ]
        return cls(shape=shape, layers=layers)

    # ------------------------------------------------------------------------------- accounting
    def block_params(self) -> int:
        return sum(layer.params(self.shape) for layer in self.layers)

    def params(self) -> int:
        return self.shape.embedding_params() + self.block_params()

    def inheriting_ratio(self) -> float:
        """Kept / original parameters, counting all parameters as the paper does."""
        return self.params() / self.shape.dense_params()

    def block_ratio(self) -> float:
        """Kept / original parameters of the decoder blocks only."""
        return self.block_params() / self.shape.dense_block_params()

    @property
    def source_indices(self) -> list[int]:
        return [layer.source_index for layer in self.layers]

    def is_dense(self) -> bool:
        return self.key() == SubnetSpec.dense(self.shape).key()

    def summary(self) -> dict[str, Any]:
        return {
            "num_layers": len(self.layers),
            "head_dims": [layer.head_dim for layer in self.layers],
            "kv_heads": [layer.num_kv_heads for layer in self.layers],
            "intermediate_sizes": [layer.intermediate_size for layer in self.layers],
            "params": self.params(),
            "block_params": self.block_params(),
            "inheriting_ratio": self.inheriting_ratio(),
            "block_ratio": self.block_ratio(),
        }

    # ------------------------------------------------------------------------------- validation
    def validate(self, shape: ModelShape | None = None) -> "SubnetSpec":
        """Check the spec against a model shape; raise :class:`InvalidSpecError` with one line if wrong."""
        shape = shape or self.shape
        if shape != self.shape:
            diffs = [k for k, v in shape.to_dict().items() if self.shape.to_dict().get(k) != v]
            raise InvalidSpecError(f"subnet spec was made for another model (differs in: {', '.join(diffs)})")
        if shape.num_attention_heads % shape.num_key_value_heads:
            raise InvalidSpecError("subnet spec shape: num_attention_heads must be a multiple of num_key_value_heads")
        if shape.rope and shape.head_dim % 2:
            raise InvalidSpecError("subnet spec shape: a rotary head_dim must be even")
        if not self.layers:
            raise InvalidSpecError("subnet spec keeps no decoder layer")
        sources = self.source_indices
        if any(not 0 <= s < shape.num_layers for s in sources):
            raise InvalidSpecError(f"subnet spec names a layer outside 0..{shape.num_layers - 1}: {sources}")
        if sorted(set(sources)) != sources:
            raise InvalidSpecError(f"subnet spec layers must be unique and in increasing order, got {sources}")
        for layer in self.layers:
            where = f"layer {layer.source_index}"
            _check_index_list(layer.kv_heads, shape.num_key_value_heads, f"{where} kv_heads")
            if len(layer.attention_channels) != len(layer.kv_heads):
                raise InvalidSpecError(
                    f"{where}: {len(layer.attention_channels)} attention channel lists for {len(layer.kv_heads)} kv heads"
                )
            widths = {len(c) for c in layer.attention_channels}
            if len(widths) != 1 or 0 in widths:
                raise InvalidSpecError(f"{where}: every kept head must keep the same, non-zero number of channels")
            for channels in layer.attention_channels:
                _check_index_list(channels, shape.head_dim, f"{where} attention channels")
                if shape.rope:
                    kept = set(channels)
                    if any(rope.partner(c, shape.head_dim, shape.rotary_dim) not in kept for c in kept):
                        half = shape.rotated_channels // 2
                        raise InvalidSpecError(f"{where}: rotary channels must be kept in pairs (i, i + {half})")
            if shape.qk_norm and len(layer.head_dim_set()) > 1:
                raise InvalidSpecError(f"{where}: with per-head q/k norms (one weight for every head) all kept "
                                       "heads of a layer must keep the same channels")
            _check_index_list(layer.mlp_channels, shape.intermediate_size, f"{where} mlp channels")
            if not len(layer.mlp_channels):
                raise InvalidSpecError(f"{where}: keeps no MLP channel")
        return self

    # ------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SPEC_FORMAT_VERSION,
            "shape": self.shape.to_dict(),
            "layers": [_plain(layer) for layer in self.layers],
            "summary": self.summary(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SubnetSpec":
        """Parse and validate (strictly: JSON integers only, known keys only); :class:`InvalidSpecError`
        names the first problem, so a bad spec is refused before any model work."""
        try:
            if not isinstance(data, dict):
                raise InvalidSpecError(f"a subnet spec is a JSON object, got {type(data).__name__}")
            version = data.get("format_version", SPEC_FORMAT_VERSION)
            if version != SPEC_FORMAT_VERSION:
                raise InvalidSpecError(f"unsupported subnet spec format_version {version}")
            shape = ModelShape(**_typed_fields(ModelShape, data["shape"], "shape"))
            if not isinstance(data["layers"], list):
                raise InvalidSpecError("subnet spec 'layers' must be a list")
            layers = []
            for layer in data["layers"]:
                if not isinstance(layer, dict):
                    raise InvalidSpecError("each subnet spec layer must be a JSON object")
                unknown = sorted(set(layer) - _LAYER_KEYS)
                if unknown:
                    raise InvalidSpecError(f"unknown subnet spec layer field(s): {', '.join(unknown)}")
                where = f"layer {layer.get('source_index')}"
                if not isinstance(layer["attention_channels"], list):
                    raise InvalidSpecError(f"{where} attention_channels must be a list of lists")
                layers.append(LayerSpec(
                    source_index=_int(layer["source_index"], f"{where} source_index"),
                    kv_heads=_int_list(layer["kv_heads"], f"{where} kv_heads"),
                    attention_channels=[_int_list(c, f"{where} attention channels") for c in layer["attention_channels"]],
                    mlp_channels=_int_list(layer["mlp_channels"], f"{where} mlp channels"),
                    attention_out_bias=_bool(layer.get("attention_out_bias", False), f"{where} attention_out_bias"),
                    mlp_out_bias=_bool(layer.get("mlp_out_bias", False), f"{where} mlp_out_bias"),
                ))
            metadata = data.get("metadata", {})
            if not isinstance(metadata, dict):
                raise InvalidSpecError("subnet spec metadata must be a JSON object")
        except InvalidSpecError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidSpecError(f"malformed subnet spec: {type(e).__name__}: {e}") from None
        return cls(shape=shape, layers=layers, metadata=dict(metadata)).validate()

    def save(self, path: str | os.PathLike) -> None:
        from optimum_subnet.core.files import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SubnetSpec":
        from optimum_subnet.core.files import read_json

        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE_NAME
        return cls.from_dict(read_json(path))

    def key(self) -> str:
        """A content hash of the structure (not the metadata), used to cache fitness values."""
        payload = json.dumps([_plain(layer) for layer in self.layers], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()


SPEC_FILE_NAME = "subnet_config.json"


_LAYER_KEYS = {"source_index", "kv_heads", "attention_channels", "mlp_channels", "attention_out_bias", "mlp_out_bias"}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(f"{what} must be an integer, got {value!r}")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpecError(f"{what} must be true or false, got {value!r}")
    return value


def _int_list(values: Any, what: str) -> list[int]:
    if not isinstance(values, list):
        raise InvalidSpecError(f"{what} must be a list of integers")
    return [_int(v, what) for v in values]


def _typed_fields(cls, values: Any, what: str) -> dict[str, Any]:
    """``values`` checked against the dataclass ``cls``'s field types (str / int / bool only)."""
    import dataclasses

    if not isinstance(values, dict):
        raise InvalidSpecError(f"subnet spec {what} must be a JSON object")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise InvalidSpecError(f"unknown subnet spec {what} field(s): {', '.join(unknown)}")
    for name, value in values.items():
        expected = types[name]
        minimum = 0 if name in _ZERO_ALLOWED else 1
        ok = (isinstance(value, str) if expected == "str" else isinstance(value, bool) if expected == "bool"
              else isinstance(value, int) and not isinstance(value, bool) and value >= minimum)
        if not ok:
            raise InvalidSpecError(f"subnet spec {what}.{name} must be {_TYPE_WORDS[expected]}, got {value!r}")
    return values


_TYPE_WORDS = {"str": "a string", "bool": "true or false", "int": "a positive integer"}
#: integer shape fields where 0 is meaningful (``rotary_dim``: all channels rotate)
_ZERO_ALLOWED = {"rotary_dim"}


def _plain(layer: "LayerSpec") -> dict[str, Any]:
    """A layer as JSON values (a search candidate's index lists may be numpy arrays)."""
    return {k: v.tolist() if hasattr(v, "tolist") else ([c.tolist() if hasattr(c, "tolist") else c for c in v]
                                                        if k == "attention_channels" else v)
            for k, v in asdict(layer).items()}


def _check_index_list(values: Sequence[int], upper: int, what: str) -> None:
    if list(values) != sorted(set(values)):
        raise InvalidSpecError(f"{what} must be unique and sorted")
    if len(values) and (values[0] < 0 or values[-1] >= upper):
        raise InvalidSpecError(f"{what} out of range 0..{upper - 1}")
