"""``python -m madapter``: the pipeline CLI (see :mod:`madapter.cli`)."""

from madapter.cli import run

if __name__ == "__main__":
    run()
