"""The socket transport's pieces without Ray: frames over a Unix socket, the replica's server, and the router's
connection (responses kept for the call they belong to, a closed stream told from a slow one)."""

import os
import socket
import threading
import time

import pytest
import torch

from switchyard.cluster.deployments.socket_server import MAX_PATH, SocketServer, socket_path
from switchyard.cluster.dispatch.frames import ERROR, MESSAGE, recv_frame, send_frame
from switchyard.cluster.dispatch.socket_transport import _Connection
from switchyard.experts.messages import ExpertRequest, ExpertResponse


def request(tokens: int, layer: int = 3) -> ExpertRequest:
    return ExpertRequest(layer, torch.randn(tokens, 64), torch.randint(0, 8, (tokens, 2)), torch.rand(tokens, 2))


@pytest.mark.parametrize("tokens", [1, 64, 4096])  # 4096 x 64 floats: 1 MiB, more than one sendmsg/recv moves
def test_a_frame_carries_a_request_whole(tokens):
    a, b = socket.socketpair()
    sent = request(tokens)
    writer = threading.Thread(target=send_frame, args=(a, 7, sent))
    writer.start()
    seq, kind, got = recv_frame(b)
    writer.join()
    assert (seq, kind, got.layer) == (7, MESSAGE, 3)
    for name in ("hidden", "expert_ids", "weights"):
        assert torch.equal(getattr(got, name), getattr(sent, name))


def test_a_frame_cut_short_is_a_closed_stream_not_a_message():
    a, b = socket.socketpair()
    send_frame(a, 1, request(4))
    a.close()
    recv_frame(b)  # the whole frame was written before the close
    with pytest.raises(ConnectionError):
        recv_frame(b)


def serve_doubles(request_):
    if request_.layer < 0:
        raise ValueError("no such layer")
    time.sleep(0.01 * request_.layer)
    return ExpertResponse(request_.layer, 2 * request_.hidden)


@pytest.fixture
def server(tmp_path):
    srv = SocketServer(str(tmp_path / "g.sock"), serve_doubles)
    yield srv
    srv.close()


def connect(path: str) -> _Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return _Connection(sock)


def test_the_server_answers_in_order_and_a_receive_keeps_the_others_answers(server):
    conn = connect(server.path)
    first, second = request(2, layer=2), request(5, layer=1)
    seq_a, seq_b = conn.send(first), conn.send(second)
    kind, b = conn.receive(seq_b, time.monotonic() + 5)  # read past the first call's answer
    assert kind == MESSAGE and torch.equal(b.hidden, 2 * second.hidden)
    assert seq_a in conn.arrived
    kind, a = conn.receive(seq_a, time.monotonic() + 5)
    assert kind == MESSAGE and torch.equal(a.hidden, 2 * first.hidden) and not conn.arrived


def test_what_the_handler_raises_comes_back_and_the_connection_stays_usable(server):
    conn = connect(server.path)
    kind, err = conn.receive(conn.send(request(1, layer=-1)), time.monotonic() + 5)
    assert kind == ERROR and isinstance(err, ValueError) and "no such layer" in str(err)
    kind, ok = conn.receive(conn.send(request(1, layer=0)), time.monotonic() + 5)
    assert kind == MESSAGE and ok.layer == 0


def test_a_slow_answer_times_out_and_a_closed_server_is_a_closed_stream(server):
    conn = connect(server.path)
    seq = conn.send(request(1, layer=50))  # answers after 0.5 s
    with pytest.raises((TimeoutError, socket.timeout)):
        conn.receive(seq, time.monotonic() + 0.1)
    other = connect(server.path)
    server.close()  # stops accepting; the open connection lives until its thread ends
    assert not os.path.exists(server.path)
    other.sock.shutdown(socket.SHUT_WR)  # as a dying router's kernel does: the server's reader sees EOF
    with pytest.raises(ConnectionError):
        other.receive(0, time.monotonic() + 5)


def test_a_socket_path_fits_a_unix_socket_address():
    path = socket_path("123456-abcdef12")
    assert len(path) <= MAX_PATH and path.endswith("sy-123456-abcdef12.sock")


def test_two_large_requests_in_flight_do_not_wait_on_each_other(server):
    """Micro-batches: a router writes the second layer's request before it reads the first's answer. Each is
    16 MiB, far over a socket's buffer: the replica must keep reading while its first answer waits to be read."""
    conn = connect(server.path)
    first, second = request(65536, layer=0), request(65536, layer=0)
    done = {}

    def both():
        seqs = [conn.send(first), conn.send(second)]
        done["answers"] = [conn.receive(seq, time.monotonic() + 30)[1] for seq in seqs]

    runner = threading.Thread(target=both, daemon=True)
    runner.start()
    runner.join(30)
    assert "answers" in done, "the two requests blocked each other"
    assert torch.equal(done["answers"][1].hidden, 2 * second.hidden)


def test_answers_nobody_asked_for_are_dropped_after_a_while(server):
    """A failed step abandons its other micro-batch's call: its answer, read on the way to a later one, is
    not kept for ever."""
    from switchyard.cluster.dispatch.socket_transport import KEEP_ABANDONED

    conn = connect(server.path)
    seqs = [conn.send(request(1, layer=0)) for _ in range(3 * KEEP_ABANDONED)]
    kind, _ = conn.receive(seqs[-1], time.monotonic() + 10)
    assert kind == MESSAGE and len(conn.arrived) <= KEEP_ABANDONED
    assert seqs[-2] in conn.arrived  # a recent one is still there for its call
