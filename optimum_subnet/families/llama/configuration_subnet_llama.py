"""Configuration of a LLaMA-family subnet with per-layer widths.

Self-contained (imports only transformers) because it is copied beside saved weights so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed.
"""

from transformers.models.llama.configuration_llama import LlamaConfig


class SubnetLlamaConfig(LlamaConfig):
    """A :class:`~transformers.LlamaConfig` whose decoder layers each have their own sizes.

    ``subnet_layers`` holds one dict per kept decoder layer:

    * ``source_layer``: index of the layer in the dense model it was cut from;
    * ``num_attention_heads`` / ``num_key_value_heads`` / ``head_dim``: the layer's attention shape;
    * ``rope_channels``: for each KV head, the channels of the original head it keeps (indices in
      ``[0, config.head_dim)``), so that kept channels rotate at their original RoPE frequencies;
      ``None`` means all channels;
    * ``intermediate_size``: the layer's MLP width;
    * ``attention_out_bias`` / ``mlp_out_bias``: whether o_proj / down_proj carry a bias (bias
      compensation of baselines such as FLAP).

    ``head_dim`` (the top-level one) stays the *original* head size: it sets the rotary table and
    the softmax scale 1/sqrt(head_dim), which a subnet keeps (Shen et al. 2024, Sec. 3.1).
    """

    model_type = "subnet_llama"

    def __init__(self, subnet_layers=None, **kwargs):
        super().__init__(**kwargs)
        if subnet_layers is None:
            subnet_layers = [
                {
                    "source_layer": i,
                    "num_attention_heads": self.num_attention_heads,
                    "num_key_value_heads": self.num_key_value_heads,
                    "head_dim": self.head_dim,
                    "rope_channels": None,
                    "intermediate_size": self.intermediate_size,
                    "attention_out_bias": False,
                    "mlp_out_bias": False,
                }
                for i in range(self.num_hidden_layers)
            ]
        self.subnet_layers = [dict(layer) for layer in subnet_layers]
        self.num_hidden_layers = len(self.subnet_layers)

    def to_dict(self):
        # ``PretrainedConfig.to_dict`` deep-copies every attribute; for the per-layer channel lists
        # (~100k ints at 7B shape) that alone cost ~0.25 s per model built, i.e. per search candidate
        # (``GenerationConfig.from_model_config`` calls it). The lists hold only ints: copy them flat.
        layers = self.__dict__.pop("subnet_layers")
        try:
            output = super().to_dict()
        finally:
            self.subnet_layers = layers
        output["subnet_layers"] = [
            {k: ([list(c) for c in v] if k == "rope_channels" and v is not None else v) for k, v in layer.items()}
            for layer in layers
        ]
        return output
