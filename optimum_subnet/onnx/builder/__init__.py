"""Direct ONNX builder: the decoder graph written from a model's weights and per-layer shapes (no tracing).

See :mod:`optimum_subnet.onnx.builder.decoder` for the graph and which onnxruntime-genai patterns it reuses.
"""

from optimum_subnet.onnx.builder.decoder import BuildConfig, build_decoder, plan_layers, read_graph_info
from optimum_subnet.onnx.builder.weights import ModelWeights, RandomWeights, WeightSource

__all__ = ["BuildConfig", "ModelWeights", "RandomWeights", "WeightSource", "build_decoder", "plan_layers",
           "read_graph_info"]
