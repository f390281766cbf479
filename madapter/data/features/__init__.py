"""The features stage: the frozen backbone's multi-level outputs, computed once and stored.

A frozen backbone (``model.tuning: madapter`` or ``linear``) gives the same outputs for the same
view every epoch and every sweep trial, so :mod:`madapter.data.features.stage` runs it ONCE per
stored view (Ray Data, an actor pool holding the backbone) and :mod:`madapter.data.features.feature_store`
writes and reads the result: per split, per level ``[views, T, h, w, C]`` shards plus the pooled
``[views, T, D]`` feature, a manifest and ``features.json``.  Training and evaluation then read
these (``train.source: features``) instead of decoding clips and running the backbone.
"""
