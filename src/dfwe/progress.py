"""Progress bars for long work (tqdm); hidden when output is not a terminal or DFWE_PROGRESS=0."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str) -> tqdm:
    """A tqdm bar that shows on a terminal and stays silent in logs and tests."""
    forced = os.environ.get("DFWE_PROGRESS")
    disable = None if forced is None else forced == "0"
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)
