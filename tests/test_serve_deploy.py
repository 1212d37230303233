"""`serve deploy configs/local.yaml` as docs/serving.md gives it: Serve's own CLI against a Ray cluster started
with `ray start --head`, then one completion.

Ray 2.60 starts a local cluster with token authentication whenever a token exists (~/.ray/auth_token, which any
`ray.init()` that starts a cluster writes), but `serve deploy` sends the token only with RAY_AUTH_MODE=token in its
environment: the docs export it for both, as this test does. The cluster is this test's alone (its own temp dir,
ports and CPUs) and is stopped through its own `ray start --block` process, never with `ray stop`, which would
stop every Ray cluster of the user on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from switchyard.cluster.bench.cpu import process_tree

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` and `serve` commands of this interpreter
SERVE = [sys.executable, "-m", "ray.serve.scripts"]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def stop_cluster(head: subprocess.Popen) -> None:
    """Stop the cluster of one `ray start --head --block`: SIGTERM makes it stop the processes it started; any
    of its process tree (GCS, raylet, dashboard, workers) still there after that is killed."""
    tree = process_tree(head.pid)
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_serve_deploy_of_local_yaml_on_a_ray_start_cluster_answers(tmp_path):
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env, serve_http = free_ports(8)
    temp_dir = tempfile.mkdtemp(prefix="r-", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "token"  # as the docs say: the cluster and `serve deploy` both use Ray's token
    # configs/local.yaml as it is, but for Serve's HTTP port: 8000 may be taken on a shared machine
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["http_options"]["port"] = serve_http
    config_path = tmp_path / "local.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run([*RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    head = subprocess.Popen(
        [*RAY, "start", "--head", "--block", "--disable-usage-stats", "--temp-dir", temp_dir, "--num-cpus", "4", "--port", str(gcs),
         "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(runtime_env)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deploy = [*SERVE, "deploy", str(config_path), "--address", f"http://127.0.0.1:{dashboard}"]
        deadline = time.monotonic() + 120
        while True:  # until the dashboard answers `serve deploy`
            assert head.poll() is None, "ray start --head exited"
            done = subprocess.run(deploy, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                break
            assert "AuthenticationError" not in done.stderr + done.stdout, done.stderr
            assert time.monotonic() < deadline, done.stderr[-2000:]
            time.sleep(2)
        base = f"http://127.0.0.1:{serve_http}"
        body = {"model": "demo-model", "prompt": "The history of", "max_tokens": 8, "temperature": 0}
        deadline = time.monotonic() + 300
        while True:  # the app builds and loads the model on the cluster after `serve deploy` returns
            try:
                r = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the deployed app did not answer"
            time.sleep(2)
        assert r.json()["usage"]["completion_tokens"] == 8
        assert r.json()["model"] == "demo-model"
    finally:
        stop_cluster(head)
        subprocess.run(["rm", "-rf", temp_dir], check=False)
