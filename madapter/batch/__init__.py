"""Batch inference on Ray Data: ``python -m madapter batch-predict`` scores many videos at once.

``predict`` (:mod:`madapter.predict`) is the one-file tool; this package is how a user scores a
whole split, a folder or a list of a million clips on a Ray cluster.  It reuses ``predict``'s
model loading (:class:`madapter.predict.VideoPredictor`), the evaluation protocol's views
(:func:`madapter.data.clips.load_video_views`) and its scoring (:func:`madapter.inference.view_logits`
+ :func:`madapter.metrics.average_views`), so a video gets the same top-k here as from ``predict``.

- :mod:`.inputs` -- which videos: an index split, a folder, or a list file;
- :mod:`.model` -- the driver's side of the model: checkpoint or ``models:/name@alias`` to bytes + protocol;
- :mod:`.workers` -- what runs on Ray: decoding tasks and the classifying actor;
- :mod:`.output` -- the table's columns and its atomic Parquet/CSV writer;
- :mod:`.dataflow` -- :func:`batch_predict`, the Ray Data graph and its summary.
"""
