"""A real loopback h2c server that answers gRPC calls wrongly on purpose (the ``h2`` library).

The fixture apps (real grpc-go and grpcio) give the good and the SIGTERM endings; this
server gives what only a proxy or a broken peer does: an HTTP error instead of gRPC (as
queue-proxy's 502 when the app is gone), a stream reset mid-call, a GOAWAY that takes the
call with it, a stream that ends OK without its final message, and a call never answered.
It counts the calls it was sent, which proves no call was retried.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
from google.protobuf import wrappers_pb2

BEHAVIOURS = {
    "bad_gateway": "':status 502' text/plain 'EOF' and no gRPC: queue-proxy's answer",
    "rst_stream": "headers, one message, then RST_STREAM INTERNAL_ERROR",
    "goaway": "headers, one message, then GOAWAY and the connection closed",
    "no_final": "headers, two 'tick' messages, then grpc-status 0 without the final message",
    "hold": "read the call, never answer",
}


def grpc_message(text: str) -> bytes:
    """One length-prefixed gRPC message: a StringValue."""
    data = wrappers_pb2.StringValue(value=text).SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


class H2Server:
    """``behaviour`` (one of BEHAVIOURS) on 127.0.0.1:<ephemeral>, a thread per connection."""

    def __init__(self, behaviour: str, server_header: str | None = None) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour: one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")
        self.behaviour = behaviour
        self.server_header = server_header
        self.calls = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> H2Server:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        try:
            while not self._stop.is_set():
                data = conn.recv(65535)
                if not data:
                    return
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        with self._lock:
                            self.calls += 1
                    ended = isinstance(event, h2.events.StreamEnded)
                    if ended and self._answer(conn, h2c, event.stream_id):
                        return
                conn.sendall(h2c.data_to_send())
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, h2c: h2.connection.H2Connection, sid: int) -> bool:
        """Answer stream ``sid``; True when the connection is to end now."""
        extra = [("server", self.server_header)] if self.server_header else []
        grpc_headers = [(":status", "200"), ("content-type", "application/grpc"), *extra]
        if self.behaviour == "hold":
            return False
        if self.behaviour == "bad_gateway":
            h2c.send_headers(sid, [(":status", "502"), ("content-type", "text/plain"), *extra])
            h2c.send_data(sid, b"EOF\n", end_stream=True)
            return False
        h2c.send_headers(sid, grpc_headers)
        h2c.send_data(sid, grpc_message("tick 1"))
        if self.behaviour == "no_final":
            h2c.send_data(sid, grpc_message("tick 2"))
            h2c.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            return False
        conn.sendall(h2c.data_to_send())
        time.sleep(0.3)
        if self.behaviour == "rst_stream":
            h2c.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return False
        h2c.close_connection(h2.errors.ErrorCodes.NO_ERROR)  # GOAWAY: this call was seen
        conn.sendall(h2c.data_to_send())
        return True
