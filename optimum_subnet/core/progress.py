"""Progress bars for long work (tqdm on stderr; silenced with OPTIMUM_SUBNET_NO_PROGRESS=1)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> Iterator:
    """``enabled=False``: a silent bar (the processes of a distributed run other than rank 0)."""
    from tqdm.auto import tqdm

    disable = not enabled or os.environ.get("OPTIMUM_SUBNET_NO_PROGRESS", "") not in ("", "0")
    bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()
