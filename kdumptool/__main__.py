"""``python -m kdumptool``: the command line."""

from kdumptool.cli import run

if __name__ == "__main__":  # not when imported (multiprocessing spawn, tools)
    run()
