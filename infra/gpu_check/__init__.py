"""``make gpu-check`` (``python -m infra.gpu_check``): the GPU acceptance check a user runs on a machine
with an NVIDIA GPU.

CPU machines cannot run it (and ``make test`` never does): without CUDA it stops at once with one
line and exit code 2.  On one GPU it takes a few minutes (budget: 10) and checks, printing one
``PASS name (details)`` or ``FAIL name: reason`` line each:

``cuda``       the device, and whether it has native bf16 (the branch's ``train.amp`` follows it).
``memory``     ``python -m benchmarks.memory --device cuda`` (ViT-B/16, 8 frames, 224px, batch 32): peak
               training memory per tuning mode; ``madapter`` must stay below 12.7 GB (DiST, the
               lowest published figure); writes ``benchmarks/results/memory_cuda.{json,png,md}``.
               Runs first, while no other process of the check holds GPU memory.
``pipeline``   ``dvc repro`` of the whole synthetic pipeline in a throw-away copy of this checkout
               (download -> ... -> register) on the FRAMES path, the presets' path: ``train.source:
               frames`` (the full model, DDP over the adapter, the frozen backbone on the GPU) with
               ``train.use_gpu: true``, ``model.half_precision: true``, ``train.amp: bf16``,
               ``evaluate.device: cuda``, 2 epochs, 1 Ray worker.  A Ray worker that asks for a GPU only
               starts on one, so a completed run trained on the GPU; its status file must say it
               trained the full model (``VideoClassifier``) on frames, and metrics.json ``source: frames``.
``evaluate``   the evaluate stage again, in this process, asserting through the CUDA allocator that
               the evaluated model ran on the GPU (at least half the fp32 weight bytes of the model
               evaluate really ran -- the full model on frames, the head alone on features).
``predict``    ``madapter.predict.predict`` on test videos, the same way, plus sane probabilities.
``serve``      ``mlflow models serve --env-manager local`` of the registered model with
               ``MADAPTER_DEVICE=cuda``, one video scored over HTTP; it must agree with ``predict``,
               and device memory in use must grow while the server holds the model (a CPU-served
               model touches no GPU memory at all).
``nccl``       with 2 or more GPUs: a 2-worker NCCL training run (``train.num_workers=2``), the
               end-of-epoch reductions included; with one GPU the line says SKIP.
``features``   the ``features`` stage (``python -m madapter features``) with ``train.source: features``
               and ``features.use_gpu: true``: Ray Data actors that each ask for a GPU.  Device
               memory in use (polled from this process over every GPU) must grow while it runs (an
               actor that fell back to the CPU touches none); the stored dtype and shapes must be
               the ones ``features.json`` declares; and the first stored views must agree with the
               same views recomputed on the CPU in fp32 (cosine >= 0.99: the GPU ran the backbone in
               bf16/fp16 under ``model.half_precision``, so they are close, not equal).
``train_features`` ``python -m madapter train`` on those features with ``train.use_gpu: true``: the Ray
               worker built the head alone (``FeatureClassifier``, its status file), recorded device
               cuda and the branch's autocast, and its CUDA allocator peak holds at least the head's
               fp32 weights (a head left on the CPU would allocate ~nothing on the GPU).
``evaluate_features`` the evaluate stage on the cached test views with ``evaluate.device: cuda``: the
               head alone on the GPU (allocator peak >= half its weights), and its per-video scores
               agree with the same checkpoint's FULL model on the source videos on the GPU
               (``score_frames``): the cached path and the online path give the same answer on CUDA.

Both paths state every key they measure (``gpu_setup`` + ``train.source`` + ``features.use_gpu``:
``gpu_overrides`` for the frames path, written into the copy's params.yaml; ``feature_sets`` for the
features path, as ``-S`` overrides), so a default in params.yaml never changes what a check measures.

``--list`` prints the checks in run order and exits (it needs no GPU).

Exit code: 0 when every check passes, 1 when one fails, 2 when there is no CUDA device (or an NVIDIA
GPU torch cannot use, e.g. a driver too old for this torch's CUDA: the line says which and what to
install; :mod:`madapter.gpu_diagnosis`).  Logs of
every subprocess are kept under the printed work directory when a check fails (``--keep`` keeps
them always).

The modules, one job each: :mod:`~infra.gpu_check.common` (thresholds, :class:`CheckFailed`, the
context), :mod:`~infra.gpu_check.process` (subprocesses, the repository copy),
:mod:`~infra.gpu_check.settings` (what each path states), :mod:`~infra.gpu_check.device` (where the
work ran), :mod:`~infra.gpu_check.frames` and :mod:`~infra.gpu_check.features` (the checks of each
path), :mod:`~infra.gpu_check.cli` (the order, the lines, the exit code).
"""
