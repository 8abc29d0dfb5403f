"""One kit on one serial line, gateway side: handshake, numbered requests with their answers, incoming frames.

:class:`KitSession` needs only ``await link.read(wait_s) -> bytes`` and ``link.write(bytes)`` (the serial
port on the event loop in :mod:`edugate.drivers.serial_reader` has both). Run :meth:`KitSession.pump` as a
task: it reads frames, answers a node's HELLO (ACK, or NACK naming the versions this gateway speaks),
resolves the answers to :meth:`request`, and queues HELLO (accepted), READINGS and LOG frames on
:attr:`incoming` (a driver emits readings, then acknowledges them with :meth:`send`).
Every bad frame is counted by kind and reported once through ``on_problem``; the link keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from edugate.firmware_bridge.protocol import (
    SUPPORTED_VERSIONS,
    Ack,
    CodecError,
    Frame,
    FrameSplitter,
    FwStatus,
    Hello,
    HelloRequest,
    Log,
    Message,
    Nack,
    Readings,
    Reason,
    UnsupportedVersion,
    encode,
)
from edugate.firmware_bridge.protocol.messages import MsgType

log = logging.getLogger(__name__)

Answer = Ack | Nack | FwStatus


class ByteLink(Protocol):
    async def read(self, wait_s: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...


class KitRefused(Exception):
    """The node speaks no protocol version this gateway does; the message says which ones the gateway speaks."""


class NoAnswer(TimeoutError):
    """The node did not answer a request in time."""


class KitSession:
    def __init__(self, link: ByteLink, *, supported: tuple[int, ...] = SUPPORTED_VERSIONS,
                 on_problem: Callable[[str, str], None] | None = None) -> None:
        self.link = link
        self.supported = supported
        self.on_problem = on_problem or (lambda kind, message: log.warning("kit link: %s", message))
        self.splitter = FrameSplitter(supported)
        self.hello: Hello | None = None
        self.refused: str | None = None
        self.counters: dict[str, int] = {}
        self.incoming: asyncio.Queue[Frame] = asyncio.Queue(maxsize=256)
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._hello_changed = asyncio.Event()
        self.hellos = 0
        """HELLOs (and refused HELLOs) received so far."""

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # ---------------------------------------------------------------- sending

    def send(self, message: Message) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFF
        self.link.write(encode(message, seq))
        return seq

    async def request(self, message: Message, wait_s: float) -> Answer:
        """Send ``message`` and return the node's answer to it (ACK, NACK or FW_STATUS) within ``wait_s``.

        Raises :class:`NoAnswer`, or ``ConnectionResetError`` when the node restarts meanwhile."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        seq = self.send(message)
        self._waiting[seq] = future
        try:
            async with asyncio.timeout(wait_s):
                return await future
        except TimeoutError:
            self.count("timeouts")
            raise NoAnswer(f"no answer to {message.TYPE.name} (seq {seq}) within {wait_s:g} s") from None
        finally:
            self._waiting.pop(seq, None)

    async def handshake(self, wait_s: float) -> Hello:
        """Ask the node to introduce itself; return its HELLO (already acknowledged). Raises :class:`KitRefused`
        or :class:`NoAnswer`."""
        before = self.hellos
        self.send(HelloRequest(self.supported))
        return await self.wait_hello(wait_s, after=before)

    async def wait_hello(self, wait_s: float, after: int) -> Hello:
        """The first HELLO (or refusal) after the ``after``-th one: pass :attr:`hellos` read before the request
        that makes the node introduce itself (a reset, a firmware switch)."""
        try:
            async with asyncio.timeout(wait_s):
                while self.hellos <= after:
                    self._hello_changed.clear()
                    await self._hello_changed.wait()
        except TimeoutError:
            raise NoAnswer(f"the node sent no HELLO within {wait_s:g} s") from None
        if self.refused is not None:
            raise KitRefused(self.refused)
        assert self.hello is not None
        return self.hello

    # ---------------------------------------------------------------- receiving

    async def pump(self, idle_s: float = 1.0) -> None:
        """Read and dispatch frames until cancelled (or until the link raises)."""
        while True:
            data = await self.link.read(idle_s)
            if data:
                self.feed(data)

    def feed(self, data: bytes) -> None:
        for item in self.splitter.feed(data):
            if isinstance(item, UnsupportedVersion):
                self._refuse(item)
            elif isinstance(item, CodecError):
                if item.kind != "empty":
                    self.count(f"bad_frames_{item.kind}")
                    self.on_problem(item.kind, f"bad frame from the kit: {item}")
            else:
                self._dispatch(item)

    def _refuse(self, exc: UnsupportedVersion) -> None:
        self.count("refused_version")
        if exc.msg_type == MsgType.HELLO:
            self.send(Nack(exc.seq, Reason.UNSUPPORTED_VERSION, str(exc)))
            self.refused = f"kit refused: it speaks protocol version {exc.version}, not spoken here ({exc})"
            self.hello = None
            self.on_problem("version", self.refused)
            self.hellos += 1
            self._hello_changed.set()

    def _dispatch(self, frame: Frame) -> None:
        message = frame.message
        self.count("frames_in")
        if isinstance(message, Hello):
            restarted = frame.seq == 0 and self.hello is not None  # a node's first frame after boot has seq 0
            self.hello = message
            self.refused = None
            self.send(Ack(frame.seq, "welcome"))
            if restarted:
                self.count("node_restarts")
                for future in self._waiting.values():  # nothing the node was asked before will be answered
                    if not future.done():
                        future.set_exception(ConnectionResetError("the node restarted (sent a new HELLO)"))
            self.hellos += 1
            self._hello_changed.set()
            self._queue(frame)
        elif isinstance(message, Ack | Nack | FwStatus):
            future = self._waiting.get(message.seq)
            if future is not None and not future.done():
                future.set_result(message)
            else:
                self.count("stray_answers")
        elif isinstance(message, Readings | Log):
            self._queue(frame)
        else:
            self.count("unexpected_frames")
            self.on_problem("type", f"the kit sent a {message.TYPE.name}, which only a gateway sends")

    def _queue(self, frame: Frame) -> None:
        try:
            self.incoming.put_nowait(frame)
        except asyncio.QueueFull:
            self.count("incoming_dropped")
