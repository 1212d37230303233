"""The OpenAI app over an in-process engine (no Ray), for the API's tests."""

from contextlib import contextmanager

from switchyard.cluster.openai_api import ServedModel, build_openai_app
from switchyard.configs.engine import EngineConfig
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine


@contextmanager
def served_app(path, name: str, max_num_seqs: int = 4, max_model_len: int = 128, **engine_config):
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                                       **engine_config))
    app = build_openai_app()
    app.state.served = ServedModel(name, AsyncEngine(engine), max_model_len)
    try:
        yield app
    finally:
        app.state.served.engine.shutdown()
