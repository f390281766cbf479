"""Online serving: a registered model (or a checkpoint) behind Ray Serve, on HTTP.

``python -m madapter serve`` (:mod:`madapter.serving.server`) runs three deployments
(:mod:`madapter.serving.app`): an HTTP ingress that checks every request against the limits of
params.yaml ``serve:`` (:mod:`madapter.request_checks`), CPU replicas that probe and decode uploads in
a process they replace when a video hangs or crashes it (:mod:`madapter.serving.decoding`), and model
replicas that classify the decoded views in batches gathered across requests, for the version the
registry alias names (:mod:`madapter.serving.models`).  Frames and crops are ``predict``'s: one
:class:`~madapter.data.clips.ViewProtocol`, the one the model was evaluated with.
"""
