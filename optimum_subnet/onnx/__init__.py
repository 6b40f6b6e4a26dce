"""ONNX export of dense models and heterogeneous subnets through Optimum's exporter."""
