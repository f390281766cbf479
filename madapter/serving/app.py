"""The Ray Serve application: HTTP ingress -> decoding replicas -> batching model replicas.

- :class:`Ingress` (FastAPI): ``POST /predict`` (one video: a raw body, a multipart upload, or
  ``{"path": ...}`` when the operator allowed a directory), ``POST /predict/batch`` (several files of
  one multipart upload), ``GET /healthz`` (the process answers), ``GET /readyz`` (the model is loaded
  and has classified a warm-up clip), ``GET /`` (model, version, alias, card).  It reads at most
  ``serve.max_upload_mb`` of a body, and follows the registry alias: every ``serve.alias_poll_s`` it
  asks which version the alias names, has the model replicas load a new one, and only then sends new
  requests to it; requests already on their way finish on the version they started with.
- :class:`Decoder`: CPU replicas; each decodes in a child process it replaces when a video hangs or
  crashes it (:mod:`madapter.serving.decoding`).
- :class:`Classifier`: the model replicas (on a GPU when they have one); ``@serve.batch`` gathers
  the videos of concurrent requests into one forward pass.  Versions are addressed by key, and the
  last two stay loaded, so an alias move drops nothing.

Ray Serve's own limits do the rest: ``max_ongoing_requests`` per replica, then up to
``max_queued_requests`` waiting, then 503 with ``Retry-After``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) at runtime,
# and Serve's ingress rewraps the methods, so string annotations would not resolve.
import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from madapter.config import Params
from madapter.request_checks import Rejected, UploadLimits, server_path, too_large
from madapter.serving.models import ModelSource

logger = logging.getLogger(__name__)

VERSIONS_KEPT = 2
"""Loaded versions per model replica: the alias's current one and the one requests in flight may still need."""
MAX_BATCH_FILES = 64
"""Files one ``/predict/batch`` upload may hold (each is also within the body's size limit)."""

api = FastAPI(title="madapter", description="Video action recognition with a frozen image backbone and an M-adapter branch.")


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    """A bad query parameter (``?top_k=abc``): 400 and one line naming it, not FastAPI's list of dicts."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "request"
    return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=400)


@api.exception_handler(Exception)
async def _server_error(request: Request, err: Exception) -> JSONResponse:
    """Anything unexpected: 500 and its first line (the traceback goes to the replica's log)."""
    logger.exception("%s %s failed", request.method, request.url.path)
    text = str(err).strip().splitlines()
    return JSONResponse({"error": f"internal error: {text[0] if text else type(err).__name__}"}, status_code=500)


@serve.deployment(name="decoder", ray_actor_options={"num_cpus": 1})
class Decoder:
    """Video bytes -> the protocol's views, one decoding child process per replica.

    It accepts as many requests as the ingress (``serve.max_ongoing_requests``) and queues them on its
    lock: a replica that refused them instead would send each caller into Ray Serve's retry backoff,
    which idled the decoder between requests in the load benchmark.
    """

    def __init__(self, limits: UploadLimits) -> None:
        from madapter.serving.decoding import DecodingProcess

        self.process = DecodingProcess(limits)
        self.lock = asyncio.Lock()

    async def decode(self, data: bytes, protocol: dict[str, Any]) -> dict[str, Any]:
        """``{"views": array}`` or ``{"status", "error"}`` (a refusal travels as data, not as a Ray error)."""
        async with self.lock:  # one decode at a time per child process
            try:
                return {"views": await asyncio.to_thread(self.process.views, data, protocol)}
            except Rejected as rejected:
                return {"status": rejected.status, "error": rejected.reason}


@serve.deployment(name="classifier")
class Classifier:
    """The model replicas: versions by key, top-k per video, videos of concurrent requests batched."""

    def __init__(self, source: ModelSource, device: str, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.source = source
        self.device = device
        self.predictors: OrderedDict[str, Any] = OrderedDict()
        self.warm: set[str] = set()
        self.classify_batch.set_max_batch_size(max_batch_size)
        self.classify_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.loading = asyncio.Lock()

    async def _predictor(self, key: str):
        async with self.loading:
            if key not in self.predictors:
                self.predictors[key] = await asyncio.to_thread(self.source.load, key, self.device)
                while len(self.predictors) > VERSIONS_KEPT:
                    evicted, _ = self.predictors.popitem(last=False)
                    self.warm.discard(evicted)  # reloaded later, it is warmed up again
            self.predictors.move_to_end(key)
            return self.predictors[key]

    async def prepare(self, key: str) -> dict[str, Any]:
        """Load version ``key`` and classify a warm-up clip (zeros of its protocol's shape) with it;
        returns its protocol and classes."""
        predictor = await self._predictor(key)
        if key not in self.warm:
            p = predictor.protocol
            zeros = np.zeros((p.clips * p.crops, p.num_frames, 3, p.crop_size, p.crop_size), np.float32)
            await asyncio.to_thread(_probabilities, predictor, [zeros])
            self.warm.add(key)
        return {"protocol": predictor.protocol.to_dict(), "classes": list(predictor.classes)}

    async def classify(self, key: str, views: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        return await self.classify_batch((key, views, top_k))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def classify_batch(self, items: list[tuple[str, np.ndarray, int]]) -> list[list[dict[str, Any]]]:
        """One forward pass per version present in the batch (almost always one)."""
        answers: list[list[dict[str, Any]] | None] = [None] * len(items)
        for key in dict.fromkeys(key for key, _, _ in items):
            predictor = await self._predictor(key)
            picked = [i for i, item in enumerate(items) if item[0] == key]
            probs = await asyncio.to_thread(_probabilities, predictor, [items[i][1] for i in picked])
            for i, row in zip(picked, probs, strict=True):
                answers[i] = predictor.top_k(row, items[i][2])
        return answers


def _probabilities(predictor, views: list[np.ndarray]) -> np.ndarray:
    """Video-level probabilities ``[N, C]`` of N videos' views, all views in one forward pass."""
    import torch

    from madapter.inference import view_logits
    from madapter.metrics import average_views

    with torch.no_grad():
        return average_views(view_logits(predictor.model, torch.from_numpy(np.stack(views))))


async def _limited_body(request: Request, limits: UploadLimits) -> bytes:
    """The request body, reading no more than ``serve.max_upload_mb`` (413 beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise too_large(limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_upload_bytes:
            raise too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploaded_files(request: Request, body: bytes, limits: UploadLimits) -> list[tuple[str, bytes]]:
    """``(filename, bytes)`` of every file of a multipart body (the body is already within the size limit)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, once(), max_files=MAX_BATCH_FILES, max_fields=16,
                             max_part_size=limits.max_upload_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise Rejected(400, f"malformed multipart upload: {err.message}") from None
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
             if hasattr(value, "filename")]
    if not files:
        raise Rejected(400, "the multipart upload holds no file (send the video as a file field, e.g. -F video=@clip.mp4)")
    return files


def _error(rejected: Rejected, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return JSONResponse({"error": rejected.reason}, status_code=rejected.status, headers=headers)


@serve.deployment(name="ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    """HTTP: checks each request, has it decoded and classified, follows the registry alias."""

    def __init__(self, decoder: DeploymentHandle, classifier: DeploymentHandle, source: ModelSource,
                 limits: UploadLimits, top_k: int, alias_poll_s: float) -> None:
        self.decoder = decoder
        self.classifier = classifier
        self.source = source
        self.limits = limits
        self.top_k = top_k
        self.alias_poll_s = alias_poll_s
        self.key: str | None = None
        self.protocols: dict[str, dict[str, Any]] = {}
        self.follower: asyncio.Task | None = None
        self.switching = asyncio.Lock()

    async def _current_key(self) -> str:
        """The version new requests go to (resolved and prepared on first use; then followed)."""
        if self.key is None:
            async with self.switching:
                if self.key is None:
                    key = await asyncio.to_thread(self.source.current)
                    await self._prepare(key)
                    self.key = key
        if self.follower is None and self.source.alias is not None:
            self.follower = asyncio.get_running_loop().create_task(self._follow_alias())
        return self.key

    async def _prepare(self, key: str) -> None:
        prepared = await self.classifier.prepare.remote(key)
        self.protocols[key] = prepared["protocol"]

    async def _follow_alias(self) -> None:
        while True:
            await asyncio.sleep(self.alias_poll_s)
            try:
                key = await asyncio.to_thread(self.source.current)
                if key != self.key:
                    await self._prepare(key)  # loaded and warm before the first request goes to it
                    logger.info("%s moved: version %s -> %s", self.source.uri, self.key, key)
                    self.key = key
            except Exception as err:  # noqa: BLE001 - keep serving the version we have; try again later
                logger.warning("following %s: %s", self.source.uri, str(err).splitlines()[0] if str(err) else err)

    async def _answer(self, name: str, data: bytes, top_k: int) -> dict[str, Any]:
        key = await self._current_key()
        decoded = await self.decoder.decode.remote(data, self.protocols[key])
        if "error" in decoded:
            raise Rejected(decoded["status"], f"{name}: {decoded['error']}")
        top = await self.classifier.classify.remote(key, decoded["views"], top_k)
        return {"video": name, "model": self.source.uri, "version": key, "top_k": top}

    def _top_k(self, top_k: int | None) -> int:
        if top_k is not None and not 1 <= top_k <= 1000:
            raise Rejected(400, "top_k must be between 1 and 1000")
        return top_k or self.top_k

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            key = await self._current_key()
        except Exception as err:  # noqa: BLE001 - not ready yet: say why in one line
            return JSONResponse({"ready": False, "reason": str(err).splitlines()[0] if str(err) else type(err).__name__},
                                status_code=503)
        return JSONResponse({"ready": True, "version": key})

    @api.get("/")
    async def describe(self) -> dict[str, Any]:
        key = await self._current_key()
        info = await asyncio.to_thread(self.source.describe, key)
        return {**info, "protocol": self.protocols[key], "endpoints": ["POST /predict", "POST /predict/batch",
                                                                      "GET /healthz", "GET /readyz"]}

    @api.post("/predict")
    async def predict(self, request: Request, top_k: int | None = None) -> JSONResponse:
        try:
            k = self._top_k(top_k)
            body = await _limited_body(request, self.limits)
            kind = request.headers.get("content-type", "")
            if kind.startswith("multipart/form-data"):
                files = await _uploaded_files(request, body, self.limits)
                if len(files) != 1:
                    raise Rejected(400, f"POST /predict takes one video, got {len(files)} files (use /predict/batch)")
                name, data = files[0]
            elif kind.startswith("application/json"):
                name, data = await asyncio.to_thread(self._server_file, body)
            else:
                name, data = "<upload>", body
            return JSONResponse(await self._answer(name, data, k))
        except Rejected as rejected:
            return _error(rejected)

    @api.post("/predict/batch")
    async def predict_batch(self, request: Request, top_k: int | None = None) -> JSONResponse:
        """Every file of one multipart upload; a file that cannot be classified gets ``{"error"}``, the others answers."""
        try:
            k = self._top_k(top_k)
            body = await _limited_body(request, self.limits)
            files = await _uploaded_files(request, body, self.limits)
        except Rejected as rejected:
            return _error(rejected)

        async def one(name: str, data: bytes) -> dict[str, Any]:
            try:
                return await self._answer(name, data, k)
            except Rejected as rejected:
                return {"video": name, "error": rejected.reason, "status": rejected.status}

        return JSONResponse({"results": list(await asyncio.gather(*(one(n, d) for n, d in files)))})

    def _server_file(self, body: bytes) -> tuple[str, bytes]:
        import json

        try:
            path = json.loads(body)["path"]
        except (ValueError, KeyError, TypeError):
            raise Rejected(400, 'a JSON body must be {"path": "<server-side video path>"}') from None
        resolved = server_path(str(path), self.limits)
        return str(path), resolved.read_bytes()


def build_app(params: Params, source: ModelSource):
    """The application for ``serve.run``: its replicas, limits and batching from ``params.serve``."""
    cfg = params.serve
    limits = UploadLimits.from_section(cfg)
    queueing = {"max_ongoing_requests": cfg.max_ongoing_requests, "max_queued_requests": cfg.max_queued_requests,
                "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s)}
    scaling: dict[str, Any] = {"num_replicas": cfg.model_replicas}
    if cfg.max_model_replicas is not None and cfg.max_model_replicas > cfg.model_replicas:
        scaling = {"autoscaling_config": {"min_replicas": cfg.model_replicas, "max_replicas": cfg.max_model_replicas,
                                          "target_ongoing_requests": cfg.max_batch_size}}
    classifier = Classifier.options(
        ray_actor_options={"num_cpus": 1, "num_gpus": cfg.gpus_per_model_replica}, **scaling, **queueing,
    ).bind(source, cfg.device, cfg.max_batch_size, cfg.batch_wait_timeout_s)
    decoder = Decoder.options(num_replicas=cfg.decode_replicas, max_ongoing_requests=cfg.max_ongoing_requests).bind(limits)
    return Ingress.options(**queueing).bind(decoder, classifier, source, limits,
                                            cfg.top_k or params.register.top_k, cfg.alias_poll_s)


def app_from_args(args: dict[str, str]):
    """Ray Serve's application builder, for a Serve config (a KubeRay RayService's ``serveConfigV2``):
    ``import_path: madapter.serving.app:app_from_args`` with ``args: {params: <params.yaml>, model: <uri>}``.
    The config's ``http_options`` and ``deployments:`` entries then override params.yaml ``serve:``."""
    from pathlib import Path

    from madapter.config import load_params

    params = load_params(Path(args.get("params", "params.yaml")))
    return build_app(params, ModelSource.from_params(params, args.get("model")))
