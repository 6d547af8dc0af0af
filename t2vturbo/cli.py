"""What the command-line entry points share."""

from __future__ import annotations

import os
import sys


def prog(module: str) -> str:
    """argparse's ``prog`` for ``module``: the console script's name when run as one (``t2vturbo-sample``),
    else ``python -m MODULE``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("t2vturbo-") else f"python -m {module}"
