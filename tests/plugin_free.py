"""Run a script in a child Python that cannot import optimum_subnet: what a user without the plugin sees
(a saved model loaded with ``trust_remote_code=True``, or refused without it).

The child runs offline, with its own modules cache, and with the parent's torch thread count: the copied
modeling code is the plugin's, so on the same weights its logits equal the parent's exactly, but only when
float reductions split the same way across threads (``tests/numerics.py``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

BLOCK_PLUGIN = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "optimum_subnet" or name.startswith("optimum_subnet."):
                raise ImportError("plugin blocked for this test")
    sys.meta_path.insert(0, Block())
""")


def run_without_plugin(body: str, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``body`` (dedented) after :data:`BLOCK_PLUGIN`; stdout / stderr captured as text."""
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    script = BLOCK_PLUGIN + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
