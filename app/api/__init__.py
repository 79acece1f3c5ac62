"""The HTTP API (FastAPI): the app, its middleware and error mapping, and the thin routers."""
