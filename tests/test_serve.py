"""`fmadapt serve` (issue 24): the same predictions as `fmadapt predict`, micro-batching, limits, tokens, no 5xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import text_frame, write_image_folder
from fmadapt import ImageClassifier, TextClassifier, load_model
from fmadapt.compress.export import export_model
from fmadapt.serve.app import ServeConfig, check_binding, create_app

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

TEXTS = ["a wonderful, moving film", "boring and far too long", "这部电影很好看"]


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-text")
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, seed=0, progress=False)
    model = clf.fit(text_frame(16)).save_pretrained(root / "model", report=False)
    export_model(model, root / "export")
    return model, root / "export"


def client(source, **kw) -> TestClient:
    return TestClient(create_app(ServeConfig(str(source), **kw)))


def _png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("which", ["export", "model"])
def test_predict_answers_as_fmadapt_predict(text_dirs, which, tmp_path):
    model_dir, export_dir = text_dirs
    with client(export_dir if which == "export" else model_dir) as c:
        assert c.get("/health").json() == {"status": "ok"}
        meta = c.get("/metadata").json()
        assert meta["modality"] == "text" and meta["task"] == "classification"
        r = c.post("/predict", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        assert "/predict" in c.get("/openapi.json").json()["paths"]
    model = load_model(model_dir, cache=False)
    want = model.predict_proba(TEXTS)
    assert [row["label"] for row in rows] == list(model.predict(TEXTS))
    got = np.asarray([[row["probabilities"][c] for c in model.classes_] for row in rows])
    np.testing.assert_allclose(got, want.to_numpy(), atol=1e-4)


def test_a_token_guards_predict_and_metadata_but_not_health(text_dirs):
    with client(text_dirs[1], token="s3cret") as c:
        assert c.get("/health").status_code == 200
        for path, call in (("/metadata", c.get), ("/predict", c.post)):
            assert call(path).status_code == 401
            assert call(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = c.post("/predict", json={"texts": ["fine"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_bad_requests_get_a_4xx_that_says_what(text_dirs):
    with client(text_dirs[1], max_batch=4, max_text_chars=50, max_body_bytes=2000) as c:
        cases = [
            (dict(json={"texts": ["a"] * 5}), 413, "over the limit of 4"),
            (dict(json={"texts": ["x" * 51]}), 413, "texts[0] has 51 characters"),
            (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON"),
            (dict(json={"images": ["AAAA"]}), 422, "this is a text model"),
            (dict(json={"texts": [1, 2]}), 422, "texts[0] is not a string"),
            (dict(json={"texts": []}), 422, "non-empty list"),
            (dict(json=["a", "b"]), 422, "JSON object"),
            (dict(content=b"x" * 3000, headers={"content-type": "application/json"}), 413, "over the limit of 2000"),
            (dict(files={"f": ("a.png", _png(), "image/png")}), 415, "image and sound models"),
        ]
        for kw, status, words in cases:
            r = c.post("/predict", **kw)
            assert r.status_code == status and words in r.json()["detail"], (kw, r.status_code, r.text)


def test_images_as_base64_or_multipart_and_broken_images(tmp_path):
    data = write_image_folder(tmp_path / "imgs", per_class=6)
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(data)
    export_model(clf.save_pretrained(tmp_path / "model", report=False), tmp_path / "export")
    red = _png()
    (tmp_path / "red.png").write_bytes(red)
    want = clf.predict_proba([str(tmp_path / "red.png")]).to_numpy()[0]
    huge = io.BytesIO()
    Image.new("1", (9000, 9000)).save(huge, format="PNG")  # 81 MP: tiny on the wire, refused before decoding
    with client(tmp_path / "model") as c:  # (a model directory: the decoded images go through the Predictor)
        r = c.post("/predict", files=[("files", ("red.png", red, "image/png"))])
        p = r.json()["predictions"][0]["probabilities"]
        np.testing.assert_allclose([p[k] for k in clf.classes_], want, atol=1e-5)
    with client(tmp_path / "export", max_image_pixels=1_000_000) as c:
        for kw in ({"json": {"images": [base64.b64encode(red).decode()]}},
                   {"json": {"images": ["data:image/png;base64," + base64.b64encode(red).decode()]}},
                   {"files": [("files", ("red.png", red, "image/png"))]}):
            r = c.post("/predict", **kw)
            assert r.status_code == 200, r.text
            p = r.json()["predictions"][0]["probabilities"]
            np.testing.assert_allclose([p[k] for k in clf.classes_], want, atol=1e-4)
        bad = [({"json": {"images": ["%%%"]}}, 422, "not valid base64"),
               ({"json": {"images": [base64.b64encode(b"no image").decode()]}}, 422, "not a readable image"),
               ({"json": {"images": [base64.b64encode(red[:60]).decode()]}}, 422, "not a readable image"),
               ({"json": {"images": [base64.b64encode(huge.getvalue()).decode()]}}, 413, "pixels, over the limit"),
               ({"files": [("files", ("x.png", b"\x89PNG broken", "image/png"))]}, 422, "not a readable image"),
               # (a form without files is read as JSON, as `curl -d` sends it)
               ({"data": {"a": "b"}}, 400, "not valid JSON")]
        for kw, status, words in bad:
            r = c.post("/predict", **kw)
            assert r.status_code == status and words in r.json()["detail"], (r.status_code, r.text)
        # fuzzed images (damaged PNGs and JPEGs, as base64 and as files): never a 5xx
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 90)).save(buf, format="JPEG")
        rng = np.random.default_rng(1)
        statuses = []
        for i in range(200):
            raw = _mutate(red if i % 2 else buf.getvalue(), rng)
            r = (c.post("/predict", json={"images": [base64.b64encode(raw).decode()]}) if i % 3 else
                 c.post("/predict", files=[("files", ("f.bin", raw, "application/octet-stream"))]))
            statuses.append(r.status_code)
        assert all(s < 500 for s in statuses), sorted(set(statuses))


def test_concurrent_requests_are_batched_and_answered_in_order(text_dirs):
    import httpx

    app = create_app(ServeConfig(str(text_dirs[1]), max_wait_ms=50))
    fastapi_app = app.app
    texts = [f"text number {i} " + "word " * i for i in range(12)]

    async def go():
        async with fastapi_app.router.lifespan_context(fastapi_app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/predict", json={"texts": [t]}) for t in texts])
            return rs

    rs = asyncio.run(go())
    from fmadapt.compress.exported import ExportedModel

    want = ExportedModel(text_dirs[1]).predictions(texts)
    for r, w in zip(rs, want, strict=True):
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == w["label"]
        got = r.json()["predictions"][0]["probabilities"]
        assert all(abs(got[k] - w["probabilities"][k]) < 1e-5 for k in got)


def test_the_micro_batcher_joins_waiting_requests():
    from fmadapt.serve.app import MicroBatcher

    calls = []

    def fn(items):
        calls.append(len(items))
        return [x * 2 for x in items]

    async def go():
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=50)
        b.start()
        out = await asyncio.gather(*[b.submit([i, i + 100]) for i in range(6)])
        await b.stop()
        return out

    out = asyncio.run(go())
    assert out == [[2 * i, 2 * (i + 100)] for i in range(6)]
    assert sum(calls) == 12 and len(calls) < 6 and max(calls) <= 8 + 2


def test_without_waiting_a_lone_request_runs_alone_and_requests_queued_meanwhile_form_the_next_batch():
    import threading

    from fmadapt.serve.app import MicroBatcher

    calls, busy = [], threading.Event()

    def fn(items):
        calls.append(list(items))
        if len(calls) == 1:
            busy.wait(5)  # (the first batch runs until the others have queued)
        return [x + 1 for x in items]

    async def go():
        b = MicroBatcher(fn, max_batch=4, max_wait_ms=0)
        b.start()
        first = asyncio.ensure_future(b.submit([0]))
        while not calls:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(b.submit([i])) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        busy.set()
        out = [await first] + [await r for r in rest]
        await b.stop()
        return out

    out = asyncio.run(go())
    assert out == [[i + 1] for i in range(7)]
    # the lone first request ran at once; the six that queued meanwhile ran as batches of at most 4, in order
    assert calls == [[0], [1, 2, 3, 4], [5, 6]]


def test_text_batches_bound_padding_and_cover_every_text_once():
    from fmadapt.compress.exported import length_batches

    rng = np.random.default_rng(0)
    for n, bs in ((1, 32), (7, 4), (200, 32), (64, 8)):
        lengths = rng.integers(1, 120, n)
        batches = length_batches(lengths, bs, slack=1.25, least=4)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(n))
        for b in batches:
            assert 1 <= len(b) <= bs
            if len(b) > 4:  # beyond the least size, a batch pads to at most 1.25x its real tokens
                assert lengths[b].max() * len(b) <= 1.25 * lengths[b].sum() + 1e-9
    same = length_batches(np.full(100, 9), 32)
    assert [len(b) for b in same] == [32, 32, 32, 4]  # equal lengths: full batches


def _mutate(body: bytes, rng) -> bytes:
    """A valid body damaged at random: bytes flipped, a slice cut or doubled, random bytes inserted."""
    b = bytearray(body)
    for _ in range(int(rng.integers(1, 4))):
        op, i = int(rng.integers(0, 4)), int(rng.integers(0, max(1, len(b))))
        if op == 0 and b:
            b[i % len(b)] = int(rng.integers(0, 256))
        elif op == 1:
            del b[i:i + int(rng.integers(1, 12))]
        elif op == 2:
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8))
        else:
            b[i:i] = b[i:i + int(rng.integers(1, 20))]
    return bytes(b)


def test_fuzzed_requests_never_get_a_5xx(text_dirs):
    rng = np.random.default_rng(0)
    alphabet = list('{}[]",:0123456789abctexsimag \\\n\x00é中')
    bodies = [bytes(rng.integers(0, 256, int(rng.integers(0, 200))).astype(np.uint8)) for _ in range(150)]
    bodies += ["".join(rng.choice(alphabet, int(rng.integers(0, 80)))).encode() for _ in range(150)]
    bodies += [json.dumps(v).encode() for v in (
        {"texts": None}, {"texts": "a"}, {"texts": [None]}, {"texts": [["a"]]}, {"texts": [{"a": 1}]},
        {"texts": ["a"], "x": 1}, {}, [], 1, "s", None, {"texts": [""]}, {"texts": ["\ud800".encode(
            "utf-8", "surrogatepass").decode("utf-8", "replace")]}, {"texts": [1e308]})]
    valid = [json.dumps({"texts": TEXTS[: 1 + i % 3]}, ensure_ascii=i % 2 == 0).encode() for i in range(6)]
    bodies += [_mutate(valid[i % len(valid)], rng) for i in range(700)]  # (mutations of valid bodies)
    assert len(bodies) >= 1000
    types = ["application/json", "text/plain", "multipart/form-data; boundary=x", "multipart/form-data",
             "application/x-www-form-urlencoded", ""]
    statuses = []
    with client(text_dirs[1], max_batch=8) as c:
        for i, body in enumerate(bodies):
            r = c.post("/predict", content=body, headers={"content-type": types[i % len(types)]})
            statuses.append(r.status_code)
        for path in ("/nope", "/predict/x", "/metadata?x=1"):
            statuses.append(c.get(path).status_code)
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)


def test_schemathesis_fuzzing_against_the_openapi_never_gets_a_5xx(text_dirs):
    """Schemathesis generates requests from the server's own OpenAPI document, conforming ones (positive) and ones
    that break it (negative: wrong types, missing or extra fields, too many items, over-long texts)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    statuses: list[int] = []
    with client(text_dirs[1], max_batch=8, max_text_chars=200) as c:
        schema = schemathesis.openapi.from_dict(c.get("/openapi.json").json())
        body = schema["/predict"]["POST"].definition.raw["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["texts"]["maxItems"] == 8  # (the document states the server's limits)
        for result in schema.get_all_operations():
            op = result.ok()
            modes = list(schemathesis.GenerationMode) if op.path == "/predict" else [
                schemathesis.GenerationMode.POSITIVE]
            for mode in modes:  # (an operation without inputs has nothing to break)
                n = 500 if op.path == "/predict" else 5

                @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
                @given(op.as_strategy(generation_mode=mode))
                def send(case):
                    kw = case.as_transport_kwargs(base_url="http://testserver")
                    r = c.request(**{k: v for k, v in kw.items() if k in ("method", "url", "headers", "params",
                                                                              "json", "content", "data", "files")})
                    statuses.append(r.status_code)

                send()
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert len(statuses) >= 1000 and all(s < 500 for s in statuses), counts
    assert 200 in statuses and 413 in statuses and 422 in statuses, counts


def test_a_public_address_needs_a_token_or_insecure(text_dirs):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    assert check_binding("127.0.0.1", None, False) is None and check_binding("::1", None, False) is None
    assert check_binding("localhost", None, False) is None
    assert "--token" in check_binding("0.0.0.0", None, False)
    assert check_binding("0.0.0.0", "t", False) is None and check_binding("10.0.0.5", None, True) is None
    r = CliRunner().invoke(app, ["serve", str(text_dirs[1]), "--host", "0.0.0.0"], env={"FMADAPT_TOKEN": ""})
    assert r.exit_code == 2 and "--insecure" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.parametrize("how", ["fmadapt", "server.py"])
def test_a_real_server_answers_over_loopback_and_stops_gracefully(text_dirs, how):
    export_dir = text_dirs[1]
    port = _free_port()
    cmd = ([sys.executable, "-m", "fmadapt", "serve", str(export_dir)] if how == "fmadapt"
           else [sys.executable, str(export_dir / "server.py"), str(export_dir)])
    proc = subprocess.Popen([*cmd, "--port", str(port), "--token", "t0k"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ""})
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": TEXTS}).encode(),
                                     headers={"content-type": "application/json", "Authorization": "Bearer t0k"})
        with urllib.request.urlopen(req, timeout=30) as r:
            rows = json.loads(r.read())["predictions"]
        assert [row["label"] for row in rows] == list(load_model(text_dirs[0], cache=False).predict(TEXTS))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # shut down after the application's shutdown (uvicorn re-raises SIGTERM once done: the shell sees it)
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in err, err


def test_fmadapt_predict_csv_and_the_server_agree(text_dirs, tmp_path):
    """The export's CSV (fmadapt predict) and its server give the very same numbers."""
    from typer.testing import CliRunner

    from fmadapt.cli import app

    data = tmp_path / "t.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(data, index=False)
    assert CliRunner().invoke(app, ["predict", str(text_dirs[1]), str(data), "-o", str(tmp_path / "p.csv")]
                              ).exit_code == 0
    table = pd.read_csv(tmp_path / "p.csv")
    with client(text_dirs[1]) as c:
        rows = c.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    assert table["pred"].astype(str).tolist() == [r["label"] for r in rows]
    for j, r in enumerate(rows):
        for k, v in r["probabilities"].items():
            assert abs(table[f"prob_{k}"][j] - v) < 1e-6
