"""A minimal ONNX graph writer: nodes, inputs/outputs, and initializers streamed to an external data file.

Weights are converted and written one tensor at a time (``onnx.TensorProto`` with an external-data
reference, offsets aligned to 4 KiB so ONNX Runtime can map them), so building a 7B graph never holds
more than one tensor in memory besides the small graph proto. The same idea as onnxruntime-genai's
builder (which saves through onnx_ir with a callback per tensor); written here with the plain ``onnx``
helpers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MS_DOMAIN = "com.microsoft"
#: external-data offsets are aligned to this (ONNX Runtime memory-maps aligned external initializers)
ALIGNMENT = 4096
#: tensors smaller than this stay inside the graph proto even when the weights go to an external file
INLINE_BYTES = 1024

NP_TO_ONNX = {np.dtype(np.float32): 1, np.dtype(np.float16): 10, np.dtype(np.int64): 7, np.dtype(np.int32): 6}


class GraphWriter:
    """Collects nodes and initializers; :meth:`save` writes ``model.onnx`` (and its ``.data`` file)."""

    def __init__(self, folder: str | os.PathLike, file_name: str = "model.onnx", external: bool = False):
        self.folder = Path(folder)
        self.file_name = file_name
        self.data_name = f"{file_name}.data"
        self.external = external
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self.value_infos: list = []
        self.metadata: dict[str, str] = {}
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._counter = 0
        self._data = None
        self._offset = 0
        #: bytes written per initializer name (weights and constants alike)
        self.initializer_bytes: dict[str, int] = {}

    # ------------------------------------------------------------------------------------- naming
    def unique(self, base: str, reserve: bool = True) -> str:
        name = base
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}"
        if reserve:
            self._names.add(name)
        return name

    # ------------------------------------------------------------------------------------ tensors
    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` (already in its final dtype and layout) as an initializer named ``name``."""
        from onnx import TensorProto

        array = np.ascontiguousarray(array)
        if array.dtype not in NP_TO_ONNX:
            raise TypeError(f"initializer {name}: unsupported dtype {array.dtype}")
        if name in self._names:
            raise ValueError(f"initializer {name} added twice")
        self._names.add(name)
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = NP_TO_ONNX[array.dtype]
        tensor.dims.extend(array.shape)
        if self.external and array.nbytes >= INLINE_BYTES:
            if self._data is None:
                self._data = open(self.folder / self.data_name, "wb")
            pad = (-self._offset) % ALIGNMENT
            if pad:
                self._data.write(b"\0" * pad)
                self._offset += pad
            self._data.write(memoryview(array).cast("B"))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", self.data_name), ("offset", str(self._offset)),
                               ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            self._offset += array.nbytes
        else:
            tensor.raw_data = array.tobytes()
        self.initializers.append(tensor)
        self.initializer_bytes[name] = array.nbytes
        return name

    def const(self, array: np.ndarray, base: str = "/constants/c") -> str:
        """A small constant (shapes, axes, indices), shared by every node that needs the same value."""
        array = np.ascontiguousarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(self.unique(base, reserve=False), array)
        return self._consts[key]

    # -------------------------------------------------------------------------------------- graph
    def node(self, op: str, inputs: Sequence[str], name: str, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs: Any) -> list[str]:
        """Add one node; returns its output names (``{name}/output_{i}`` unless given)."""
        from onnx import helper

        name = self.unique(name)
        outs = list(outputs) if not isinstance(outputs, int) else [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs

    def input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._names.add(name)
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        from onnx import helper

        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def save(self, opset: int, producer: str = "optimum-subnet") -> Path:
        """Write ``model.onnx`` (graph + inline tensors) beside the external data written so far."""
        import onnx
        from onnx import helper

        if self._data is not None:
            self._data.close()
            self._data = None
        graph = helper.make_graph(self.nodes, "decoder", self.inputs, self.outputs, self.initializers,
                                  value_info=self.value_infos)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                        helper.make_opsetid(MS_DOMAIN, 1)],
                                  producer_name=producer)
        model.ir_version = min(model.ir_version, 10)  # what onnxruntime 1.2x loads
        for key, value in self.metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        path = self.folder / self.file_name
        onnx.save(model, str(path))
        return path

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None
