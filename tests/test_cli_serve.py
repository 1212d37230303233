"""`switchyard serve` as a user runs it: its own local Ray, the built-in model, the printed URL, Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_switchyard_serve_answers_and_stops_cleanly_on_ctrl_c():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-m", "switchyard.cluster.cli", "serve", "--port", str(port),
                             "--num-cpus", "6"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("Switchyard is serving" in line for line in lines):
            assert proc.poll() is None, f"switchyard serve exited early: {lines}"
            assert time.monotonic() < deadline, "switchyard serve did not print its URL"
            time.sleep(0.5)
        banner = next(line for line in lines if "Switchyard is serving" in line)
        assert f"http://127.0.0.1:{port}/v1" in banner
        while not any(line.startswith("  try") for line in lines):  # the rest of the ready block
            assert time.monotonic() < deadline, f"no ready block after the URL: {lines}"
            time.sleep(0.1)
        assert any(line.startswith("  experts    one process") for line in lines)
        assert any(line.startswith("  sampling   generation_config.json: temperature") for line in lines)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                       json={"model": "demo-model", "prompt": "The history of", "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
