"""The `fedrag` command line (a leaf of the package: nothing imports it).

The entry point is [`fedrag.cli.main.main`][fedrag.cli.main.main]; each `*_cmds` module registers its
commands on the shared app in [`fedrag.cli.options`][fedrag.cli.options].
"""
