"""What a command printed to its user, without fedrag's progress lines."""

from __future__ import annotations

import re

# fedrag._progress's line: printed first when no earlier test cached the store's embeddings
PROGRESS = re.compile(r"^fedrag: [a-z ]+ \d+/\d+ \w+ \([0-9.]+/s, ETA ")


def message_lines(stderr: str) -> list[str]:
    """The non-blank lines of `stderr` that are not progress."""
    return [line for line in stderr.strip().splitlines() if line.strip() and not PROGRESS.match(line)]
