"""``python -m fedrag`` = the ``fedrag`` command."""

from fedrag.cli import main

main()
