"""Where tagstream keeps what it downloads or builds: outside the checkout, in one cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TAGSTREAM_CACHE``, else ``~/.cache/tagstream``; created on first use."""
    path = Path(os.environ.get("TAGSTREAM_CACHE") or Path.home() / ".cache" / "tagstream")
    path.mkdir(parents=True, exist_ok=True)
    return path
