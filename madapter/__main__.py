"""``python -m madapter``: the pipeline CLI, the same entry as the ``madapter`` script (:func:`madapter.cli.main`)."""

from madapter.cli import main

if __name__ == "__main__":
    main()
