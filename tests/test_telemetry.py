"""Router metrics read from other threads (the HTTP thread scrapes /metrics, the stats endpoint reads the
cost) while the engine thread writes them: no reader raises, and nothing is logged as an error."""

import asyncio
import logging
import threading
import time

from switchyard.cluster.observability.telemetry import RouterTelemetry
from switchyard.configs.engine import EngineConfig
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams


def scrape_while(telemetry: RouterTelemetry, busy, seconds: float, readers: int = 3) -> tuple[int, list[str]]:
    """Read `telemetry` as /metrics and the stats endpoint do, from `readers` threads, while `busy()` writes."""
    telemetry.on_step("prefill", 0.0, 0)  # so that the counter exists from the first scrape on
    failures: list[str] = []
    scrapes = [0]
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                assert b"switchyard_generated_tokens_total" in telemetry.prometheus_text()
                telemetry.cost()
                scrapes[0] += 1
            except Exception as err:  # noqa: BLE001 - any failure is what this test looks for
                failures.append(repr(err))

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for t in threads:
        t.start()
    try:
        busy(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return scrapes[0], failures


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_window_written_as_fast_as_possible_reads_safely(caplog):
    telemetry = RouterTelemetry("hammer", 1.0, 2.0, window_s=1.0)

    def write(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            telemetry.on_step("decode", 0.001, 4)
            telemetry.on_dispatch(4, {0: 3, 1: 2})

    with caplog.at_level(logging.WARNING):
        scrapes, failures = scrape_while(telemetry, write, 2.0)
    assert failures == [] and errors_logged(caplog) == []
    assert scrapes > 10
    assert telemetry.tokens_per_second() > 0


def test_concurrent_scrapes_during_served_load_log_no_error(checkpoints, caplog):
    telemetry = RouterTelemetry("load", 1.0, 2.0)
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=8, max_model_len=128))
    served = AsyncEngine(engine, on_step=lambda stats, outputs: telemetry.on_step(stats.kind, stats.seconds,
                                                                                   len(outputs)))

    async def one(prompt: str) -> int:
        final = None
        async for final in served.generate(served.validate(prompt, SamplingParams(max_tokens=24, ignore_eos=True))):
            pass
        return len(final.token_ids)

    async def load(seconds: float) -> int:
        end, done = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            done += sum(await asyncio.gather(*(one("yard " * (i + 1)) for i in range(8))))
        return done

    generated = []
    try:
        with caplog.at_level(logging.WARNING):
            scrapes, failures = scrape_while(telemetry, lambda s: generated.append(asyncio.run(load(s))), 3.0)
    finally:
        served.shutdown()
    assert failures == [] and errors_logged(caplog) == [] and served.errors == 0
    assert scrapes > 0 and generated[0] >= 8 * 24
    assert telemetry.cost()["tokens_per_second"] > 0
