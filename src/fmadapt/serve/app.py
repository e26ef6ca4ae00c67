"""The HTTP server of `fmadapt serve` (FastAPI + uvicorn): POST /predict, GET /health, GET /metadata, OpenAPI docs
at /docs. Concurrent requests are micro-batched in one inference thread: the inputs that arrived while the previous
batch ran (up to `max_batch`) run as the next batch, at once; `max_wait_ms` > 0 also waits that long for more.

This module needs no torch and no fmadapt: besides the standard library it imports numpy, Pillow (images),
soundfile (sounds), FastAPI, uvicorn and an ExportedModel (fmadapt's, or predict.py beside it). `fmadapt export`
copies it into the exported directory as server.py, with a Dockerfile, so an export serves from a slim image:
`python server.py . --port 8000`.

Safety: binds to 127.0.0.1 unless told otherwise, and refuses any other address without a token (Bearer) unless
`insecure`; bodies, inputs per request, text length, image pixels and sound duration are limited, and every bad
request gets a 4xx that says which limit or field (never a 5xx)."""

# (no `from __future__ import annotations`: FastAPI reads the endpoints' annotations, e.g. `Request`, at runtime)
import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:  # (in fmadapt; in an exported directory the file lies beside server.py, as request_inputs.py)
    from .request_inputs import KEYS, RequestError, _items, _multipart
except ImportError:
    from request_inputs import KEYS, RequestError, _items, _multipart  # type: ignore[no-redef]

ENV_CONFIG = "FMADAPT_SERVE_CONFIG"  # uvicorn workers > 1 build the app from this (JSON of `ServeConfig`)


@dataclass
class ServeConfig:
    """What a server runs with (all but `source` have defaults)."""

    source: str  #: an exported directory (fmadapt export) or, through fmadapt, a model directory
    token: str | None = None
    max_body_bytes: int = 16 * 2**20
    max_batch: int = 64  #: inputs per request, and per micro-batch
    max_text_chars: int = 10_000
    max_image_pixels: int = 40_000_000
    max_sound_seconds: float = 60.0  #: per clip, read from the file's header before decoding
    max_wait_ms: float = 0.0  #: 0: no waiting (a lone request runs at once; load makes the batches)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None, insecure: bool) -> str | None:
    """Why serving on `host` is refused, or None: any non-loopback address needs a token or `insecure`."""
    if is_loopback(host) or token or insecure:
        return None
    return (f"--host {host} exposes the model beyond this machine: give --token (clients then send "
            "'Authorization: Bearer TOKEN') or, on a network you trust, --insecure")


class ExportBackend:
    """Predictions of an exported directory (onnxruntime, no torch)."""

    def __init__(self, root: str) -> None:
        try:
            from ..compress.exported import ExportedModel
        except ImportError:  # (server.py inside an exported directory: predict.py beside it)
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from predict import ExportedModel  # type: ignore[no-redef]
        self.model = ExportedModel(root)
        self.modality, self.task = self.model.modality, self.model.task
        #: the table columns the model reads beside the text (each request then sends one row per text)
        self.table_columns = [c["name"] for c in self.model.table.columns] if self.model.table is not None else []
        meta = self.model.meta
        self.metadata = {"source": "export", "modality": self.modality, "task": self.task,
                         "classes": self.model.classes, "backbones": meta.get("backbones"),
                         "precision": self.model.precision, "fmadapt_version": meta.get("fmadapt_version"),
                         "parity": meta.get("parity"), **({"table_columns": self.table_columns}
                                                          if self.table_columns else {})}

    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """Texts, decoded images (PIL), or decoded sounds ((mono samples, sample rate), see `_sound`)."""
        if self.modality == "audio":
            items = [self.model.at_rate(wave, sr) for wave, sr in items]
        if self.table_columns:  # ((text, row) pairs)
            return self.model.predictions([t for t, _ in items], table=[r for _, r in items])
        return self.model.predictions(items)


def backend_for(source: str) -> Any:
    """The backend of `source`: an export runs here; a model directory needs fmadapt (serve/backends.py)."""
    if (Path(source) / "export.json").is_file():
        return ExportBackend(source)
    from .backends import ModelBackend  # (fmadapt and torch)

    return ModelBackend(source)


class MicroBatcher:
    """Collects the inputs of concurrent requests into batches for one inference thread."""

    def __init__(self, fn: Any, max_batch: int, max_wait_ms: float) -> None:
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmadapt-infer")
        self.task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((items, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            batch, n = [first], len(first[0])
            # whatever queued while the previous batch ran joins this one, without waiting: under load batches
            # grow by themselves, and a lone request is not delayed
            while n < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                n += len(batch[-1][0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch and self.max_wait > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                batch.append(nxt)
                n += len(nxt[0])
            flat = [x for items, _ in batch for x in items]
            try:
                out = await loop.run_in_executor(self.executor, self.fn, flat)
            except Exception as e:  # (the futures' owners answer; the loop goes on)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            pos = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result(out[pos:pos + len(items)])
                pos += len(items)


def create_app(cfg: ServeConfig, backend: Any = None) -> Any:
    """The FastAPI app serving `cfg.source` (or the `backend` given)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    backend = backend or backend_for(cfg.source)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["batcher"] = MicroBatcher(backend.predict, cfg.max_batch, cfg.max_wait_ms)
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="fmadapt model server", version=str(backend.metadata.get("fmadapt_version") or ""),
                  lifespan=lifespan, description=f"A {backend.modality} {backend.task} model: {cfg.source}")

    def denied(request: Any) -> Any:
        if not cfg.token:
            return None
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {cfg.token}".encode()):
            return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN'"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata(request: Request) -> Any:
        return denied(request) or backend.metadata

    key = KEYS[backend.modality]
    example: dict[str, Any] = {key: {"texts": ["a great film"], "images": ["<base64 of a JPEG>"],
                                     "sounds": ["<base64 of a WAV>"]}[key]}
    item = ({"type": "string", "maxLength": cfg.max_text_chars} if key == "texts" else
            {"type": "string", "format": "byte", "description": "an image file (JPEG, PNG, ...) in base64"}
            if key == "images" else {"type": "string", "format": "byte", "description": "a sound file (WAV, "
                                     f"FLAC, OGG, ...) of at most {cfg.max_sound_seconds:g} s, in base64"})
    body_schema: dict[str, Any] = {"type": "object", "required": [key], "additionalProperties": False, "properties": {
        key: {"type": "array", "minItems": 1, "maxItems": cfg.max_batch, "items": item}}}
    columns = getattr(backend, "table_columns", None)
    if columns:  # (one row of the table columns per text)
        value = {"anyOf": [{"type": "string", "maxLength": 1000}, {"type": "number"}, {"type": "boolean"},
                           {"type": "null"}]}
        body_schema["required"].append("table")
        body_schema["properties"]["table"] = {
            "type": "array", "minItems": 1, "maxItems": cfg.max_batch, "description": "one row per text",
            "items": {"type": "object", "required": columns, "properties": {c: value for c in columns}}}
        example["table"] = [{c: None for c in columns}]
    body_doc = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": body_schema, "example": example},
        **({"multipart/form-data": {"schema": {"type": "object", "properties": {"files": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}}}}
           if backend.modality != "text" else {})}}}

    @app.post("/predict", openapi_extra=body_doc)
    async def predict(request: Request) -> Any:
        """{"predictions": [{"label": ..., "probabilities": {class: p}}, ...]} in the order of the inputs
        (regression: {"value"}, with "lower" and "upper" when the model has intervals)."""
        no = denied(request)
        if no is not None:
            return no
        try:
            ctype = request.headers.get("content-type", "")
            if ctype.startswith("multipart/form-data"):
                items = await _multipart(request, backend.modality, cfg)
            else:
                raw = await _body(request, cfg)
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise RequestError(400, "the body is not valid JSON") from None
                items = _items(body, backend.modality, cfg, getattr(backend, "table_columns", None))
        except RequestError as e:
            return JSONResponse({"detail": str(e)}, e.status)
        out = await state["batcher"].submit(items)
        # (serialised here: FastAPI's encoder of a returned dict costs more than the model on short texts)
        return Response(json.dumps({"predictions": out}), media_type="application/json")

    return _limit_body(app, cfg.max_body_bytes)


async def _body(request: Any, cfg: ServeConfig) -> bytes:
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cfg.max_body_bytes:
            raise RequestError(413, f"the body is over the limit of {cfg.max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _limit_body(app: Any, limit: int) -> Any:
    """The app behind a check of Content-Length (413 before anything is read when it is over `limit`)."""
    from starlette.responses import JSONResponse

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not length.isdigit():
                await JSONResponse({"detail": "bad Content-Length header"}, 400)(scope, receive, send)
                return
            if int(length) > limit:
                await JSONResponse({"detail": f"the body ({int(length)} bytes) is over the limit of {limit} bytes"},
                                   413)(scope, receive, send)
                return
        await app(scope, receive, send)

    guarded.app = app  # type: ignore[attr-defined]  # (the FastAPI app, for tests and the OpenAPI schema)
    return guarded


def app_from_env() -> Any:
    """uvicorn's factory for workers > 1: the ServeConfig comes from $FMADAPT_SERVE_CONFIG."""
    return create_app(ServeConfig(**json.loads(os.environ[ENV_CONFIG])))


def run(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, insecure: bool = False,
        log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish first (graceful shutdown, at most 30 s)."""
    import uvicorn

    why = check_binding(host, cfg.token, insecure)
    if why:
        raise SystemExit(f"error: {why}")
    if workers > 1:
        os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
        target: Any = f"{__name__}:app_from_env" if __package__ else "server:app_from_env"
        uvicorn.run(target, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                    timeout_graceful_shutdown=30)
    else:
        uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


def main(argv: list[str] | None = None) -> None:
    """`python server.py EXPORT_DIR [--host H] [--port P] [--token T | --insecure] [--workers N]` (the token may
    also come from $FMADAPT_TOKEN)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("source")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("FMADAPT_TOKEN") or None)
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    run(ServeConfig(a.source, token=a.token), a.host, a.port, a.workers, a.insecure)


if __name__ == "__main__":
    main()
