"""The benchmarks: each measures what the project claims and writes its numbers with their provenance.

``python -m benchmarks`` (``make bench``) runs them all, each in its own process, then renders
docs/benchmarks.md from their results (:mod:`benchmarks.report`); ``python -m benchmarks.<name>``
runs one alone, with its own flags.  :mod:`benchmarks.harness` is what every benchmark shares.
"""

SUITE = ("memory_scaling", "memory", "decode", "store", "feature_cache", "train_scaling", "accuracy", "ablations",
         "serve_load")
"""Every benchmark ``make bench`` runs, in this order.  The memory sweep first: it needs the most memory
(a ViT-L full fine-tuning step, ~11 GB) and ``memory`` reuses its points.  Then in the order data flows:
decode -> store -> features -> train, and serving last.  The GPU ones (``memory --device cuda``, ``make gpu-check``) need
CUDA and are not run here; the report says so."""
