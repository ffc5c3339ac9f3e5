"""`python -m fedrag` = the `fedrag` command."""

from fedrag.cli.main import main

main()
