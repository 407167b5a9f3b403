"""uvicorn's h11 protocol with deadlines for slow clients and JSON error bodies.

uvicorn times out idle kept-alive connections only: a client that opens a connection and sends a
header byte now and then, or a body byte now and then, holds a connection (and a file descriptor)
for ever (slowloris). Here a request's headers must be complete within the header timeout and
its body within the body timeout; a client too slow gets a 408 where an answer is still possible,
else the connection is closed. The errors uvicorn answers itself (malformed HTTP, oversized
headers) carry the protocol's JSON error body instead of plain text."""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from server.errors import ErrorDetail, error_payload

logger = logging.getLogger(__name__)


def _target_path(received: bytes) -> str:
    """The path of a request line that has arrived, so the error body fits the client's protocol."""
    parts = received.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) >= 2 and parts[1].startswith(b"/"):
        return parts[1].split(b"?", 1)[0].decode("latin-1")
    return "/"


class GuardedH11Protocol(H11Protocol):
    """Set through `guarded_protocol()`, which fills in the two deadlines."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._headers_too_large(data):
            self._unset_keepalive_if_required()
            self._refuse(431, self._too_large_message(), _target_path(self.conn.trailing_data[0] + data))
            return
        super().data_received(data)

    def _headers_too_large(self, data: bytes) -> bool:
        """h11 limits headers that are still incomplete only: a whole oversized block arriving at
        once would pass. Measure the request line and headers however they arrive."""
        limit = self.config.h11_max_incomplete_event_size
        if limit is None:
            return False
        received = self.conn.trailing_data[0] + data
        end = received.find(b"\r\n\r\n")
        return (end + 4 if end >= 0 else len(received)) > limit

    def _too_large_message(self) -> str:
        return (
            f"The request line and headers are larger than {self.config.h11_max_incomplete_event_size} bytes "
            "(JARVIS_MAX_HEADER_BYTES); send fewer or smaller headers"
        )

    def handle_events(self) -> None:
        super().handle_events()
        self._follow_request_state()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's own warning advises installing a WebSocket library; here none is wanted.
        logger.info("answered an upgrade request from %s as plain HTTP: no route speaks WebSocket", self._peer())

    def _follow_request_state(self) -> None:
        """Arm the deadline of the part of the request still to come: headers, then body."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self._cancel_timers()
        elif state is h11.IDLE:
            # A reused connection's next request starts its header clock with its first byte;
            # before that, uvicorn's keep-alive timeout governs the idle connection.
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)
        elif state is h11.SEND_BODY:
            self._cancel_header_timer()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)
        else:
            self._cancel_timers()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        received = self.conn.trailing_data[0]
        if not received:  # nothing was asked, so there is nothing to answer
            logger.info("closed a connection from %s that sent no request within %g s", self._peer(), self.header_timeout)
            self._close()
            return
        message = (
            f"The request headers did not arrive within {self.header_timeout:g} s (JARVIS_HEADER_TIMEOUT); "
            "send the whole request line and headers at once"
        )
        self._refuse(408, message, _target_path(received))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        message = (
            f"The request body did not arrive within {self.body_timeout:g} s of its headers "
            "(JARVIS_BODY_TIMEOUT); send the body as soon as the headers"
        )
        cycle = self.cycle
        if cycle is None or cycle.response_started:  # an answer is under way: only closing is left
            logger.info("closed the connection of %s: %s", self._peer(), message)
            self._close()
            return
        # The application waiting for the rest of the body now sees the client disconnect, and
        # whatever it answers after this is dropped (uvicorn ignores sends after a disconnect).
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(408, message, self.scope["path"])

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, as the protocol's JSON error body."""
        received = self.conn.trailing_data[0]
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(received) > limit:  # h11's own limit, on an incomplete event
            status, message = 431, self._too_large_message()
        else:
            status = 400
            message = (
                "The request is not valid HTTP/1.1: check the request line, the header syntax, the "
                "Host header and the Content-Length or Transfer-Encoding"
            )
        self._refuse(status, message, _target_path(received))

    def _refuse(self, status: int, message: str, path: str) -> None:
        """Answer with an error body and close the connection."""
        logger.info("answered %s with %d and closed: %s", self._peer(), status, message)
        body = json.dumps(error_payload(path, ErrorDetail(status, message)), separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # the connection's state no longer allows an answer
            logger.debug("could not answer %d on a connection in state %s", status, self.conn.our_state)
        self._close()

    def _close(self) -> None:
        self._cancel_timers()
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's `http` option, with these deadlines in seconds."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
