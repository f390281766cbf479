"""The Ray Serve application answers as ``predict`` does, refuses what it must in one line, and keeps
serving; when the alias moves under load, no request fails and answers switch to the new version."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from madapter.predict import predict
from tests.serve.conftest import MODEL, App, encode

pytestmark = pytest.mark.integration


def post(app: App, data: bytes | Iterator[bytes], **kwargs) -> requests.Response:
    return requests.post(f"{app.url}/predict", data=data, timeout=120, **kwargs)


def assert_same_answer(answer: list[dict], expected: list[dict]) -> None:
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_ready_healthy_and_says_what_it_serves(app: App) -> None:
    assert requests.get(f"{app.url}/healthz", timeout=30).json() == {"status": "ok"}
    ready = requests.get(f"{app.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["version"] == "1"
    info = requests.get(f"{app.url}/", timeout=30).json()
    assert info["model"] == f"models:/{MODEL}@champion" and info["alias"] == "champion" and info["version"] == "1"
    assert "## Intended use" in info["card"] or info["card"] == ""  # the register stage's card, when it wrote one
    assert info["protocol"]["num_frames"] == 8 and info["protocol"]["crop_size"] == 32


def test_answers_are_predicts_for_raw_multipart_batch_and_concurrent_requests(app: App, clips: list[Path]) -> None:
    params = app.registry.params
    expected = predict(clips, str(app.registry.checkpoints["1"]), params, top_k=3)
    for clip, want in zip(clips, expected, strict=True):
        raw = post(app, clip.read_bytes())
        assert raw.status_code == 200, raw.text
        assert raw.json()["version"] == "1"
        assert_same_answer(raw.json()["top_k"], want)
        form = requests.post(f"{app.url}/predict", files={"video": (clip.name, clip.read_bytes())}, timeout=120)
        assert form.json()["video"] == clip.name
        assert_same_answer(form.json()["top_k"], want)
    batch = requests.post(f"{app.url}/predict/batch", timeout=120,
                          files=[("videos", (c.name, c.read_bytes())) for c in clips]).json()["results"]
    for got, want in zip(batch, expected, strict=True):
        assert_same_answer(got["top_k"], want)
    # eight at once: batched across requests by the model replica, each still its own video's answer
    order = [i % len(clips) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(app, clips[i].read_bytes()), order))
    for i, answer in zip(order, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert_same_answer(answer.json()["top_k"], expected[i])


def _png_bomb(path: Path) -> Path:
    """A ~100 kB file whose one frame is 10,000 x 10,000 pixels (100 MB decoded)."""
    return encode(path, np.zeros((1, 10_000, 10_000), np.uint8), codec="png", pix_fmt="gray")


def _chunked(total_mb: int) -> Iterator[bytes]:
    """A body sent with ``Transfer-Encoding: chunked``: no Content-Length for the server to refuse up front."""
    rng = np.random.default_rng(1)
    for _ in range(4 * total_mb):
        yield rng.bytes(2**18)


def test_bad_uploads_get_a_4xx_with_one_line_and_the_server_keeps_serving(app: App, clips: list[Path],
                                                                          tmp_path: Path) -> None:
    good = clips[0].read_bytes()
    long_video = encode(tmp_path / "long.mp4", np.zeros((400, 16, 16, 3), np.uint8))
    cases = {
        "empty": (b"", {}, 400, "empty"),
        "not a video": (b"this is a text file\n" * 20, {}, 415, "not a readable video"),
        "truncated": (good[: len(good) // 2], {}, 415, "not a readable video"),
        "10,000 x 10,000 frame": (_png_bomb(tmp_path / "bomb.mov").read_bytes(), {}, 422, "serve.max_frame_pixels"),
        "too many frames": (long_video.read_bytes(), {}, 422, "serve.max_frames"),
        "too large": (np.random.default_rng(0).bytes(3 * 2**20), {}, 413, "serve.max_upload_mb"),
        "too large, chunked": (_chunked(3), {}, 413, "serve.max_upload_mb"),
        "server path": (b'{"path": "/etc/passwd"}', {"headers": {"Content-Type": "application/json"}}, 403,
                        "server-side paths are refused"),
        "bad top_k": (good, {"params": {"top_k": 0}}, 400, "top_k"),
        "top_k not a number": (good, {"params": {"top_k": "many"}}, 400, "top_k: "),
    }
    for name, (body, kwargs, status, says) in cases.items():
        answer = post(app, body, **kwargs)
        assert answer.status_code == status, f"{name}: {answer.status_code} {answer.text}"
        error = answer.json()["error"]
        assert says in error and "\n" not in error and len(error) < 300, f"{name}: {error}"
        after = post(app, good)
        assert after.status_code == 200, f"after {name}: {after.text}"
    empty_form = requests.post(f"{app.url}/predict", files={"note": (None, "no file here")}, timeout=60)
    assert empty_form.status_code == 400 and "no file" in empty_form.json()["error"]


def test_a_full_application_answers_503_with_retry_after_and_recovers(app: App, clips: list[Path]) -> None:
    """8 ongoing + 8 queued requests fit (a busy router may queue them all); 40 at once must see the rest
    refused, not piled up."""
    data = clips[1].read_bytes()
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: post(app, data), range(40)))
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 503}, codes
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers.get("Retry-After") == "2" for a in refused)
    assert post(app, data).status_code == 200


def test_the_alias_move_under_load_drops_no_request_and_switches_answers(app: App, clips: list[Path]) -> None:
    """Three clients post in a loop; the alias moves to version 2; every request succeeds, each client
    sees version 1 then version 2 (never back), and version 2's answers are its checkpoint's."""
    registry = app.registry
    expected = {v: predict(clips[:1], str(registry.checkpoints[v]), registry.params, top_k=3)[0] for v in ("1", "2")}
    data = clips[0].read_bytes()
    stop = threading.Event()
    seen: list[list[tuple[int, str | None, list]]] = [[] for _ in range(3)]

    def client(log: list) -> None:
        while not stop.is_set():
            answer = post(app, data)
            body = answer.json()
            log.append((answer.status_code, body.get("version"), body.get("top_k") or body))

    threads = [threading.Thread(target=client, args=(log,)) for log in seen]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        registry.client().set_registered_model_alias(MODEL, "champion", "2")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(any(v == "2" for _, v, _ in log[-3:]) for log in seen):
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(180)
    for log in seen:
        assert log and all(status == 200 for status, _, _ in log), [x for x in log if x[0] != 200][:3]
        versions = [v for _, v, _ in log]
        assert versions[0] == "1" and versions[-1] == "2", versions
        assert versions == sorted(versions), versions  # 1 ... 1 2 ... 2
        for _, version, top in log:
            assert_same_answer(top, expected[version])
    assert requests.get(f"{app.url}/", timeout=30).json()["version"] == "2"
