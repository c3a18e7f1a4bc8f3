"""What the command-line entry points share."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["command_name"]


def command_name(module: str) -> str:
    """How the user ran the ``xmodal.<module>`` command, for its usage and error lines: ``xmodal-<module>`` from the
    console script the install puts on the path, else ``python -m xmodal.<module>``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name == f"xmodal-{module}" else f"python -m xmodal.{module}"
