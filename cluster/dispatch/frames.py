"""Messages over a byte stream (a Unix socket between the router and an expert-group replica on its node).

A frame is a header, the pickle stream and its out-of-band buffers (pickle protocol 5: an `ExpertRequest`'s
numpy arrays travel as raw bytes, not copied into the stream):

    header   "<QIIQ": sequence number, kind (0 a message, 1 an error the far side raised), buffer count,
             pickle stream length; then one "<Q" length per buffer
    payload  the pickle stream, then each buffer

`send_frame` writes a frame with one `sendmsg` of every piece (no joining copy); `recv_frame` reads one,
each buffer into its own bytearray. A closed stream raises `ConnectionError` (EOF mid-frame included), so the
reader tells a dead peer from a slow one (`socket.timeout`).
"""

from __future__ import annotations

import pickle
import socket
import struct

HEADER = struct.Struct("<QIIQ")
LENGTH = struct.Struct("<Q")
MESSAGE, ERROR = 0, 1


def send_frame(sock: socket.socket, seq: int, obj: object, kind: int = MESSAGE) -> None:
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    parts = [HEADER.pack(seq, kind, len(raws), len(stream)), *(LENGTH.pack(r.nbytes) for r in raws), stream, *raws]
    _send_all(sock, parts)


def recv_frame(sock: socket.socket) -> tuple[int, int, object]:
    """(sequence number, kind, the object)."""
    seq, kind, count, stream_len = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    lengths = [LENGTH.unpack(_recv_exactly(sock, LENGTH.size))[0] for _ in range(count)]
    stream = _recv_exactly(sock, stream_len)
    buffers = [_recv_exactly(sock, n) for n in lengths]
    return seq, kind, pickle.loads(stream, buffers=buffers)


def _send_all(sock: socket.socket, parts: list) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        chunk = sock.recv_into(view[got:], n - got)
        if chunk == 0:
            raise ConnectionError("the other end closed the stream")
        got += chunk
    return out
