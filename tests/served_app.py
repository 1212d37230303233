"""The OpenAI app over an in-process engine (no Ray), for the API's tests."""

from contextlib import contextmanager

from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.configs.engine import EngineConfig
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine


@contextmanager
def served_app(path, name: str, max_num_seqs: int = 4, max_model_len: int = 128, max_waiting_requests=None,
               max_request_bytes=None, **engine_config):
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                                       **engine_config))
    app = build_openai_app()
    app.state.served = ServedModel(name, AsyncEngine(engine), max_model_len,
                                   max_waiting_requests=max_waiting_requests, max_request_bytes=max_request_bytes)
    try:
        yield app
    finally:
        app.state.served.engine.shutdown()


@contextmanager
def http_server(app):
    """`app` behind a real HTTP server on loopback (in-process transports do not stream, nor see a client
    leave). Yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
