"""A simulated PJLink projector or interactive display: a real TCP server speaking PJLink class 1 or 2.

The device end of the ``pjlink`` driver (drivers/pjlink/). It greets, checks the MD5 password digest
(``PJLINK ERRA`` and a closed connection when it is wrong), answers POWR, INPT, AVMT, ERST, LAMP, FILT,
CLSS, INF1, INF2, INFO, NAME, SNUM, SVER, sets power (with a warm-up) and input, counts lamp and filter
hours while on, and, as class 2, sends status notifications (UDP) to the controller that last connected.
Faults for tests: :meth:`PJLinkSimulator.garble`, ``errors`` (ERST), ``refuse`` (ERRn per command),
``silent`` (accepts connections, never answers), :meth:`stop`/:meth:`start` (the device vanishes). In a test::

    async with PJLinkSimulator(password="sesame") as projector:
        projector.port  # the TCP port it listens on (127.0.0.1)

From a shell (a class 2 projector with password, lamp hours 1 h per simulated minute)::

    edugate sim pjlink --port 4352 --password sesame --hours-per-s 0.0167
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

log = logging.getLogger(__name__)

_COMMAND = re.compile(rb"^%([12])([A-Z0-9]{4}) (.{0,128})\r$", re.DOTALL)


@dataclass
class ProjectorState:
    power: int = 0  # 0 off, 1 on, 2 cooling, 3 warm-up
    input: str = "31"
    inputs: tuple[str, ...] = ("11", "31", "32", "51")
    video_mute: bool = False
    audio_mute: bool = False
    errors: str = "000000"  # fan lamp temperature cover filter other
    lamp_hours: float = 1200.0
    filter_hours: float = 310.0
    make: str = "EduSim"
    model: str = "PJ-2000 WXGA"
    info: str = "laser-free test projector"
    name: str = "room-101"
    serial: str = "SN4352000123"
    firmware: str = "1.04"
    lamp: bool = True  # False: a flat panel (LAMP answers ERR1)
    refuse: dict[str, str] = field(default_factory=dict)  # command -> ERRn answered instead


class PJLinkSimulator:
    """One device on 127.0.0.1:``port`` (0: a free port). Running while the context is open."""

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", password: str | None = None, pjlink_class: int = 2,
                 warmup_s: float = 0.0, hours_per_s: float = 0.0, notify_port: int | None = None,
                 idle_close_s: float = 30.0, state: ProjectorState | None = None) -> None:
        self.host, self.port = host, port
        self.password = password
        self.pjlink_class = pjlink_class
        self.warmup_s = warmup_s
        self.hours_per_s = hours_per_s
        self.notify_port = notify_port
        self.idle_close_s = idle_close_s
        self.state = state or ProjectorState()
        self.silent = False
        self.connections = 0
        self.auth_failures = 0
        self.commands: list[str] = []  # every command body received, in order
        self.last_peer: str | None = None
        self._garble = 0
        self._on_since: float | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> PJLinkSimulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """The device vanishes: stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def garble(self, answers: int = 1) -> None:
        """The next ``answers`` answers are line noise."""
        self._garble += answers

    # the device

    def lamp_hours(self) -> int:
        self._accrue()
        return int(self.state.lamp_hours)

    def _accrue(self) -> None:
        now = time.monotonic()
        if self._on_since is not None:
            hours = (now - self._on_since) * self.hours_per_s
            self.state.lamp_hours += hours
            self.state.filter_hours += hours
            self._on_since = now

    def set_power(self, on: bool) -> None:
        """As if someone pressed the remote's power button (class 2: a notification follows)."""
        self._accrue()
        if on and self.state.power in (0, 2):
            self.state.power = 3 if self.warmup_s > 0 else 1
            self._on_since = time.monotonic()
            if self.warmup_s > 0:
                self._later(self.warmup_s, self._warm)
        elif not on and self.state.power in (1, 3):
            self.state.power = 0
            self._on_since = None
        self.notify("POWR", str(self.state.power))

    def _warm(self) -> None:
        if self.state.power == 3:
            self.state.power = 1
            self.notify("POWR", "1")

    def _later(self, delay: float, fn: Callable[[], object]) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            fn()
        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify(self, body: str, param: str) -> None:
        """Send a class 2 status notification to the controller that last connected (if any)."""
        if self.pjlink_class < 2 or self.notify_port is None or self.last_peer is None:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(f"%2{body}={param}\r".encode(), (self.last_peer, self.notify_port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        self.connections += 1
        peer = writer.get_extra_info("peername")
        self.last_peer = peer[0] if peer else None
        salt = secrets.token_hex(4) if self.password is not None else None
        try:
            if self.silent:
                await reader.read()
                return
            writer.write(b"PJLINK 0\r" if salt is None else f"PJLINK 1 {salt}\r".encode())
            first = True
            while True:
                try:
                    async with asyncio.timeout(self.idle_close_s):
                        line = await reader.readuntil(b"\r")
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                        asyncio.CancelledError):  # cancelled: the loop is closing; end the connection quietly
                    return
                if first and salt is not None:
                    assert self.password is not None
                    digest = hashlib.md5((salt + self.password).encode(), usedforsecurity=False).hexdigest()
                    if line[:32] != digest.encode():
                        self.auth_failures += 1
                        writer.write(b"PJLINK ERRA\r")
                        await writer.drain()
                        return
                    line = line[32:]
                first = False
                answer = self._answer(line)
                if self._garble:
                    self._garble -= 1
                    answer = b"%1P\x8fWR\xff=\x00\x13garbage\r"
                writer.write(answer)
                await writer.drain()
        finally:
            self._clients.discard(writer)
            writer.close()

    def _answer(self, line: bytes) -> bytes:
        m = _COMMAND.match(line)
        if m is None:
            return b"%1ERR1\r" if not line.startswith(b"%") else line[:6] + b"=ERR1\r"
        cls, body, param = int(m.group(1)), m.group(2).decode(), m.group(3).decode("utf-8", "replace")
        self.commands.append(body)
        head = f"%{cls}{body}="
        if cls > self.pjlink_class:
            return (head + "ERR1\r").encode()
        if body in self.state.refuse:
            return (head + self.state.refuse[body] + "\r").encode()
        return (head + self._value(cls, body, param) + "\r").encode()

    def _value(self, cls: int, body: str, param: str) -> str:
        s = self.state
        if param != "?":
            return self._set(cls, body, param)
        match body:
            case "POWR":
                return str(s.power)
            case "INPT":
                return s.input if s.power == 1 else "ERR3"
            case "AVMT":
                return "31" if s.video_mute and s.audio_mute else "11" if s.video_mute else "21" if s.audio_mute \
                    else "30"
            case "ERST":
                return s.errors
            case "LAMP":
                return f"{self.lamp_hours()} {1 if s.power == 1 else 0}" if s.lamp else "ERR1"
            case "FILT" if cls == 2:
                self._accrue()
                return str(int(s.filter_hours))
            case "CLSS":
                return str(self.pjlink_class)
            case "INF1":
                return s.make
            case "INF2":
                return s.model
            case "INFO":
                return s.info
            case "NAME":
                return s.name
            case "SNUM" if cls == 2:
                return s.serial
            case "SVER" if cls == 2:
                return s.firmware
            case "INST":
                return " ".join(s.inputs)
        return "ERR1"

    def _set(self, cls: int, body: str, param: str) -> str:
        s = self.state
        if body == "POWR":
            if param not in ("0", "1"):
                return "ERR2"
            if s.power in (2, 3):
                return "ERR3"
            self.set_power(param == "1")
            return "OK"
        if body == "INPT":
            if param not in s.inputs:
                return "ERR2"
            if s.power != 1:
                return "ERR3"
            s.input = param
            self.notify("INPT", param)
            return "OK"
        if body == "AVMT" and param in ("10", "11", "20", "21", "30", "31"):
            on = param[1] == "1"
            if param[0] in "13":
                s.video_mute = on
            if param[0] in "23":
                s.audio_mute = on
            return "OK"
        return "ERR1" if body not in ("AVMT",) else "ERR2"


async def _main(args: argparse.Namespace) -> None:
    sim = PJLinkSimulator(host=args.host, port=args.port, password=args.password, pjlink_class=args.pjlink_class,
                          warmup_s=args.warmup_s, hours_per_s=args.hours_per_s, notify_port=args.notify_port,
                          state=ProjectorState(make=args.make, model=args.model, serial=args.serial,
                                               name=args.name, power=1 if args.on else 0))
    if args.on:
        sim._on_since = time.monotonic()
    async with sim:
        print(f"PJLink class {args.pjlink_class} device {args.make} {args.model} on {args.host}:{sim.port}"
              f"{' (password set)' if args.password else ''}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4352, help="TCP port (0: any free port)")
    p.add_argument("--password", default=None, help="PJLink password (none: no authentication)")
    p.add_argument("--class", dest="pjlink_class", type=int, choices=(1, 2), default=2)
    p.add_argument("--notify-port", type=int, default=None, help="send class 2 notifications to this UDP port")
    p.add_argument("--warmup-s", type=float, default=0.0)
    p.add_argument("--hours-per-s", type=float, default=1 / 3600, help="lamp hours counted per second on")
    p.add_argument("--make", default="EduSim")
    p.add_argument("--model", default="PJ-2000 WXGA")
    p.add_argument("--serial", default="SN4352000123")
    p.add_argument("--name", default="room-101")
    p.add_argument("--on", action="store_true", help="start powered on")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
