"""The per-layer transport over Unix sockets to the expert-group replicas on the router's node.

Each replica listens on a Unix socket (cluster/deployments/socket_server.py). The router picks a replica as
the direct-call transport does (`ActorTransport`: least calls in flight, on its own node where the group has
any) and, where the replica is on its node, writes the layer's request into that replica's socket and reads
the response from it; where the replica is on another node, it calls the replica's actor as
`ActorTransport` does. One layer is then a write and a read per group, with no task submission, no
object store and no spinning: both sides wait in a blocking read, so a hand-off costs a wake-up, not a time
slice, and an idle replica uses no CPU (docs/performance.md: One layer's round trip, per transport).

Faults, as the other transports:
- a replica that dies closes its sockets: the router sees the closed stream at once, pings the replica
  (liveness.py), takes it out of the registry when it is dead, and sends the layer again to another replica
  or to the one Serve starts in its place, until the deadline, then `ExpertGroupUnavailable`;
- a replica that does not answer by the deadline: `ExpertGroupUnavailable`, and that connection is closed (an
  answer is still owed on it); the next call opens a new one;
- what the experts raise comes back as an error frame and is raised for that layer, as a Ray task error would
  be; the connection stays usable.
Responses on one connection come back in the order of their requests (the replica serves a connection on one
thread); a receive that finds another call's response first keeps it for that call (micro-batches keep two
layers in flight).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import ray

from switchyard.cluster.deployments.liveness import dead_among
from switchyard.cluster.dispatch.frames import ERROR, recv_frame, send_frame
from switchyard.cluster.dispatch.transport import ActorTransport, _Call
from switchyard.experts.messages import ExpertResponse

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
# Answers read for a call that never asked for them (a failed step abandons its other micro-batch) are
# dropped once this many later calls were sent on the connection; live calls are at most 2 x micro-batches.
KEEP_ABANDONED = 16


def _socket_path_of(_actor) -> str | None:
    """Runs inside a replica's actor: the path its socket server listens on (None: it has none)."""
    from switchyard.cluster.deployments import expert_group

    serving = expert_group._SERVING
    server = getattr(serving, "socket_server", None)
    return None if server is None else server.path


@dataclass
class _Connection:
    """One router process's stream to one replica. Sends and receives go through two handles of the socket
    (`dup`), so a send's timeout and a receive's (the call's deadline) never overwrite each other."""

    sock: socket.socket  # receives
    send_timeout_s: float = 30.0
    sender: socket.socket = field(init=False)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    recv_lock: threading.Lock = field(default_factory=threading.Lock)
    next_seq: int = 0
    arrived: dict[int, tuple[int, object]] = field(default_factory=dict)  # seq -> (kind, object), read early
    broken: bool = False

    def __post_init__(self):
        self.sender = self.sock.dup()
        self.sender.settimeout(self.send_timeout_s)  # a replica that stopped reading: no send waits forever

    def send(self, request) -> int:
        with self.send_lock:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            send_frame(self.sender, seq, request)
            return seq

    def receive(self, seq: int, deadline: float) -> tuple[int, object]:
        with self.recv_lock:
            while seq not in self.arrived:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining)
                got, kind, obj = recv_frame(self.sock)
                self.arrived[got] = (kind, obj)
                for old in [earlier for earlier in self.arrived if earlier < got - KEEP_ABANDONED]:
                    del self.arrived[old]
            return self.arrived.pop(seq)

    def close(self) -> None:
        self.broken = True
        for sock in (self.sender, self.sock):
            try:
                sock.close()
            except OSError:
                pass


@dataclass
class _SocketCall:
    connection: _Connection
    seq: int


class SocketTransport(ActorTransport):
    def __init__(self, app_name: str, group_names: list[str], timeout_s: float = 30.0, refresh_s: float = 1.0):
        self._paths: dict[str, str | None] = {}  # replica id -> its socket path, for replicas on this node
        self._connections: dict[str, _Connection] = {}
        self._conn_lock = threading.Lock()
        super().__init__(app_name, group_names, timeout_s, refresh_s)

    # -- the replica set ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        super().refresh()
        if self.here is None:
            return
        with self._lock:
            new = {r.replica_id: r.actor for group in self._groups for r in group.replicas
                   if r.replica_id not in self._paths and self.nodes.node_of(r.replica_id) == self.here}
        refs = {rid: actor.__ray_call__.remote(_socket_path_of) for rid, actor in new.items()}
        for rid, ref in refs.items():
            try:
                self._paths[rid] = ray.get(ref, timeout=CONNECT_TIMEOUT_S)
            except Exception:  # dead or busy loading: its calls go by actor calls until the next refresh asks again
                pass

    def close(self) -> None:
        with self._conn_lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
        super().close()

    def _connection(self, replica_id: str) -> _Connection | None:
        path = self._paths.get(replica_id)
        if path is None:
            return None
        with self._conn_lock:
            connection = self._connections.get(replica_id)
            if connection is not None and not connection.broken:
                return connection
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect(path)
            except OSError:  # gone (dying, or stopped): an actor call finds out which
                sock.close()
                self._paths.pop(replica_id, None)
                return None
            self._connections[replica_id] = connection = _Connection(sock, self.timeout_s)
            return connection

    def _drop_connection(self, replica_id: str, connection: _Connection) -> None:
        connection.close()
        with self._conn_lock:
            if self._connections.get(replica_id) is connection:
                del self._connections[replica_id]

    # -- calls --------------------------------------------------------------------------------------------
    def _start(self, call: _Call, replica) -> None:
        connection = self._connection(replica.replica_id)
        if connection is None:
            super()._start(call, replica)
            return
        try:
            call.future = _SocketCall(connection, connection.send(call.request))
        except OSError:  # closed under us: the replica died; receive finds out and sends it again
            call.future = _SocketCall(connection, -1)

    def _receive_one(self, call: _Call) -> ExpertResponse:
        while isinstance(call.future, _SocketCall):
            pending = call.future
            try:
                if pending.seq < 0:
                    raise ConnectionError("send failed")
                kind, obj = pending.connection.receive(pending.seq, call.deadline)
            except TimeoutError as err:  # socket.timeout is TimeoutError
                self._drop_connection(call.replica, pending.connection)  # an answer is still owed on it
                self._done(call, dead=False)
                raise self._no_answer(call) from err
            except (ConnectionError, OSError) as err:
                self._drop_connection(call.replica, pending.connection)
                dead = self._is_dead(call.group, call.replica)
                log.warning("expert group %s replica %s: socket closed (%s)%s", self.group_names[call.group],
                            call.replica, err, "; dead" if dead else "")
                self._done(call, dead=dead)
                if time.monotonic() > call.deadline:
                    raise self._no_answer(call) from err
                call.attempts += 1
                self._dispatch(call)  # another replica, or the one Serve starts in place of the dead one
                continue
            self._done(call, dead=False)
            if kind == ERROR:
                raise obj
            return obj
        return super()._receive_one(call)

    def _is_dead(self, group: int, replica_id: str) -> bool:
        with self._lock:
            actor = next((r.actor for r in self._groups[group].replicas if r.replica_id == replica_id), None)
        if actor is None:
            return False
        if dead_among({replica_id: actor}):
            path = self._paths.pop(replica_id, None)
            if path is not None and os.path.exists(path):
                os.unlink(path)  # a killed replica could not remove its own
            return True
        return False
