"""``python -m kdumptool``: the command line."""

from kdumptool.cli import main

main()
