"""`switchyard serve` as a user runs it: its own local Ray (with Ray's dashboard), the built-in model, the printed URL,
Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_rays_dashboard(lines: list[str], port: int) -> None:
    """`--dashboard`: the banner says where Ray's dashboard is, and its Serve API lists the app (with Ray's token,
    as `ray get-auth-token` prints it, where the cluster has token auth on)."""
    from ray._raylet import AuthenticationTokenLoader

    (line,) = [line for line in lines if line.startswith("  dashboard  ")]
    assert f"http://127.0.0.1:{port}" in line
    loader = AuthenticationTokenLoader.instance()
    token = loader.get_raw_token(ignore_auth_mode=True) if loader.has_token(ignore_auth_mode=True) else None
    if "token auth is on" in line:
        assert httpx.get(f"http://127.0.0.1:{port}/api/serve/applications/", timeout=60).status_code == 401
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"http://127.0.0.1:{port}/api/serve/applications/", timeout=60, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["applications"]["switchyard"]["status"] == "RUNNING"


def test_switchyard_serve_answers_and_stops_cleanly_on_ctrl_c():
    port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["SWITCHYARD_API_KEY"] = "key-from-env"  # the replica reads it: keys from both places work
    proc = subprocess.Popen([sys.executable, "-m", "switchyard.cluster.cli", "serve", "--port", str(port),
                             "--num-cpus", "6", "--api-key", "key-from-flag",
                             "--dashboard", "--dashboard-port", str(dashboard_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
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
        assert any("needs an API key" in line for line in lines)
        assert "key-from" not in "".join(lines)  # the banner says a key is needed, never which
        base = f"http://127.0.0.1:{port}"
        body = {"model": "demo-model", "prompt": "The history of", "max_tokens": 8, "temperature": 0}
        assert httpx.post(f"{base}/v1/completions", timeout=60, json=body).status_code == 401
        assert httpx.get(f"{base}/health", timeout=60).status_code == 200
        r = httpx.post(f"{base}/v1/completions", timeout=60, json=body,
                       headers={"Authorization": "Bearer key-from-flag"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
        models = httpx.get(f"{base}/v1/models", timeout=60, headers={"Authorization": "Bearer key-from-env"})
        assert models.status_code == 200, models.text
        stats = httpx.get(f"{base}/v1/switchyard/stats", timeout=60, headers={"Authorization": "Bearer key-from-env"})
        # the router leaves one core to its HTTP server: torch's default (a thread a core) less one
        assert stats.json()["torch_threads"] == max(1, torch.get_num_threads() - 1), stats.text
        check_rays_dashboard(lines, dashboard_port)
        stop = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        # bounded by the command itself (a 15 s drain, then Ray's shutdown); the margin is for a busy machine
        assert proc.wait(timeout=120) == 0
        print(f"stopped {time.monotonic() - stop:.1f} s after Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
