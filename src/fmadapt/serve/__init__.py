"""`fmadapt serve`: a fitted model or an export behind HTTP (app.py: FastAPI + uvicorn, micro-batching, limits,
tokens; backends.py: a model directory through fmadapt's public API)."""
