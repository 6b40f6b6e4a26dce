"""Per-layer widths on top of any family's config (``SubnetConfigMixin``).

Self-contained (imports nothing beyond the standard library) because it is copied beside saved
weights so that ``trust_remote_code=True`` loads a subnet without optimum-subnet installed.

A subnet config is the family's own config (``LlamaConfig``, ``Qwen2Config``, ...) whose
top-level sizes stay the *dense* model's (the rotary table and the softmax scale come from them)
plus ``subnet_layers``: one dict per kept decoder layer (see ``subnet_modeling``). Per-layer
attention types (``layer_types``: sliding / full) are those of the layers kept, so dropping a layer
never changes the type or the rope base of the ones that remain.
"""


def _dense_entry(config, index: int) -> dict:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "source_layer": index,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        "head_dim": head_dim,
        "rope_channels": None,
        "intermediate_size": config.intermediate_size,
        "attention_out_bias": False,
        "mlp_out_bias": False,
    }


class SubnetConfigMixin:
    """Mixed in before the family's config class; ``subnet_layers=None`` describes the dense model."""

    def __init__(self, subnet_layers=None, **kwargs):
        if subnet_layers is not None:
            kwargs["num_hidden_layers"] = len(subnet_layers)
        super().__init__(**kwargs)
        if subnet_layers is None:
            subnet_layers = [_dense_entry(self, i) for i in range(self.num_hidden_layers)]
        self.subnet_layers = [dict(layer) for layer in subnet_layers]

    def to_dict(self):
        # ``PretrainedConfig.to_dict`` deep-copies every attribute; for the per-layer channel lists
        # (~100k ints at 7B shape) that alone cost ~0.25 s per model built, i.e. per search candidate
        # (``GenerationConfig.from_model_config`` calls it). The lists hold only ints: copy them flat.
        layers = self.__dict__.pop("subnet_layers")
        try:
            output = super().to_dict()
        finally:
            self.subnet_layers = layers
        if layers is not None:
            output["subnet_layers"] = [
                {k: ([list(c) for c in v] if k == "rope_channels" and v is not None else v) for k, v in layer.items()}
                for layer in layers
            ]
        return output
