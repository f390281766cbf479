"""Readers that memory-map their shards lazily and travel to other processes without the maps.

Why: the frame store (:class:`madapter.data.store.frame_store.FrameStore`) and the feature store
(:class:`madapter.data.features.feature_store.FeatureStore`) are sent to DataLoader workers and Ray
workers.  A memory map belongs to the process that opened it: pickling one would copy the whole
mapped array into the message (or fail), so a reader is pickled with no open maps and re-opens
each shard on first use in the receiving process.
"""

from __future__ import annotations

from typing import Any


class LazyMapsPickle:
    """Mixin for a reader that keeps its open memory maps in ``self._maps`` (a dict, filled lazily):
    pickling drops them, unpickling restores everything else (default ``__setstate__``)."""

    _maps: dict[Any, Any]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are per process: re-open after unpickling
        return state
