"""An expert-group replica's Unix socket, for the router's socket transport (cluster/dispatch/socket_transport.py).

One thread accepts. Each connection (one per router process) gets two threads: a reader that takes requests
off the socket as they come, and a worker that computes them in order and writes each response back. The
reader never waits for the worker, so a router that writes a second request (micro-batches) before it reads
the first answer never blocks on a full socket buffer while the replica blocks writing that answer.

Every wait is a blocking read: an idle replica uses no CPU, and a request wakes its thread at once (a
Compiled Graph's channel reader spins instead, which on a node with fewer cores than processes delays each
hand-off by a time slice). What the handler raises goes back as an error frame, so the router re-raises it as
the experts' error; a replica that dies closes its connections, which the router sees at once.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import tempfile
import threading

from switchyard.cluster.dispatch.frames import ERROR, MESSAGE, recv_frame, send_frame

log = logging.getLogger(__name__)

MAX_PATH = 100  # a Unix socket path must fit sun_path (108 bytes with its NUL)
_CLOSED = object()


def socket_path(replica_id: str) -> str:
    """Where a replica listens: the temp dir when the path fits, else /tmp."""
    name = f"sy-{replica_id}.sock"
    path = os.path.join(tempfile.gettempdir(), name)
    return path if len(path) <= MAX_PATH else os.path.join("/tmp", name)


class SocketServer:
    def __init__(self, path: str, handler):
        self.path, self.handler = path, handler
        if os.path.exists(path):
            os.unlink(path)  # left by a process that died with this pid: pids are reused
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._closed = threading.Event()
        self.served = 0  # requests answered through the socket
        threading.Thread(target=self._accept, daemon=True, name="switchyard-socket-accept").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            requests: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=self._read, args=(conn, requests), daemon=True,
                             name="switchyard-socket-read").start()
            threading.Thread(target=self._work, args=(conn, requests), daemon=True,
                             name="switchyard-socket-work").start()

    @staticmethod
    def _read(conn: socket.socket, requests: queue.SimpleQueue) -> None:
        try:
            while True:
                seq, _, request = recv_frame(conn)
                requests.put((seq, request))
        except (ConnectionError, OSError):  # the router went away (or the worker closed the connection)
            requests.put(_CLOSED)

    def _work(self, conn: socket.socket, requests: queue.SimpleQueue) -> None:
        with conn:
            while (item := requests.get()) is not _CLOSED:
                seq, request = item
                try:
                    reply, kind = self.handler(request), MESSAGE
                except Exception as err:  # the experts raised: the router raises it for that layer
                    reply, kind = err, ERROR
                try:
                    send_frame(conn, seq, reply, kind)
                    self.served += 1
                except (ConnectionError, OSError):
                    return
                except Exception:  # an error that does not pickle (nothing was written yet): its text instead
                    send_frame(conn, seq, RuntimeError(f"{type(reply).__name__}: {reply}"), ERROR)

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)
