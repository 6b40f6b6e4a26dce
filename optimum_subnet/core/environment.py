"""What a rerun needs to reproduce a result: library versions, platform, threads, device (one place)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from typing import Any

PACKAGES = ("optimum-subnet", "torch", "transformers", "optimum", "optimum-onnx", "datasets", "numpy", "safetensors",
            "onnxruntime", "onnxruntime-gpu")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def environment(device: str, seed: int | None = None) -> dict[str, Any]:
    """The same seed gives the same subnet with the same library versions on the same hardware (thread
    count and GPU model change float reductions), so all of these go into every report."""
    import torch

    device = str(device)
    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "device": device, "versions": package_versions(), "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if seed is not None:
        info["seed"] = seed
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
