"""Simulated RS-232 panels and projectors on a pseudo-terminal: the device end of ``display-serial``.

One class, three families (the profiles in drivers/display_serial/profiles/): ``lg-panel`` (``ka 01 ff``
-> ``a 01 OK01x``), ``epson-escvp21`` (``PWR?`` -> ``PWR=01\\r:``) and ``benq-projector`` (``*pow=?#`` ->
echo, then ``*POW=ON#``). Power, input and lamp hours are kept; faults for tests: ``silent`` (answers
nothing), :meth:`SerialDisplay.garble` (the next reply is noise), ``port.unplug()`` / ``port.plug()``. In a
test (one event loop)::

    async with SerialDisplay(tmp_path / "ttyPANEL", "lg-panel") as panel:
        panel.power  # 0 or 1

From a shell::

    edugate sim display-serial --link /tmp/edugate/ttyPANEL --family lg-panel
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from pathlib import Path
from types import TracebackType

from edugate.simulators.serial_pty import PtyPort

FAMILIES = ("lg-panel", "epson-escvp21", "benq-projector")
LG_INPUTS = {"90", "91", "92", "c0"}
EPSON_INPUTS = {"30", "A0", "10", "20", "53"}
BENQ_INPUTS = {"hdmi": "HDMI", "hdmi2": "HDMI2", "rgb": "RGB"}


class SerialDisplay:
    def __init__(self, link: str | Path, family: str, *, power: int = 0, lamp_hours: int = 2100,
                 model: str = "MW560", serial: str = "X4KJ5678") -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
        self.family = family
        self.port = PtyPort(link, on_data=self._on_data)
        self.power = power
        self.input = {"lg-panel": "90", "epson-escvp21": "30", "benq-projector": "HDMI"}[family]
        self.lamp_hours = lamp_hours
        self.model, self.serial = model, serial
        self.silent = False
        self.received: list[str] = []
        self._garble = 0
        self._buf = b""

    async def __aenter__(self) -> SerialDisplay:
        self.port.plug()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.port.unplug()

    @property
    def link(self) -> Path:
        return self.port.link

    def garble(self, replies: int = 1) -> None:
        self._garble += replies

    def _on_data(self, data: bytes) -> None:
        self._buf += data
        while (i := self._buf.find(b"\r")) >= 0:
            line, self._buf = self._buf[:i].decode("latin-1").strip(), self._buf[i + 1:]
            if not line or self.silent:
                continue
            self.received.append(line)
            reply = self._reply(line)
            if self._garble:
                self._garble -= 1
                reply = b"\xff\x13?!" + reply[::-1][:3] + {"lg-panel": b"x", "epson-escvp21": b":",
                                                           "benq-projector": b"#"}[self.family]
            self.port.write(reply)

    def _reply(self, line: str) -> bytes:
        if self.family == "lg-panel":
            return self._lg(line).encode()
        if self.family == "epson-escvp21":
            return self._epson(line).encode()
        return (line + "\r\n" + self._benq(line) + "\r\n").encode()  # BenQ echoes the command

    def _lg(self, line: str) -> str:
        m = re.fullmatch(r"([a-z])([a-z]) ([0-9a-f]{2}) ([0-9a-f]{2})", line)
        if m is None:
            return "? 01 NG00x"
        c1, c2, set_id, data = m.groups()
        ng = f"{c2} {set_id} NG{data}x"
        if (c1 + c2) == "ka":
            if data == "ff":
                return f"a {set_id} OK{self.power:02x}x"
            if data in ("00", "01"):
                self.power = int(data)
                return f"a {set_id} OK{data}x"
        if (c1 + c2) == "xb":
            if data == "ff":
                return f"b {set_id} OK{self.input}x" if self.power else ng
            if data in LG_INPUTS and self.power:
                self.input = data
                return f"b {set_id} OK{data}x"
        if (c1 + c2) == "kf" and data == "ff":
            return f"f {set_id} OK1ex"
        return ng

    def _epson(self, line: str) -> str:
        power_codes = {0: "04", 1: "01"}
        match line:
            case "PWR?":
                return f"PWR={power_codes[self.power]}\r:"
            case "PWR ON":
                self.power = 1
                return ":"
            case "PWR OFF":
                self.power = 0
                return ":"
            case "LAMP?":
                return f"LAMP={self.lamp_hours}\r:"
            case "SOURCE?":
                return f"SOURCE={self.input}\r:" if self.power else "ERR\r:"
            case "ERR?":
                return "ERR=00\r:"
            case "SNO?":
                return f"SNO={self.serial}\r:"
        if line.startswith("SOURCE ") and line[7:] in EPSON_INPUTS and self.power:
            self.input = line[7:]
            return ":"
        return "ERR\r:"

    def _benq(self, line: str) -> str:
        m = re.fullmatch(r"\*([a-z]+)=([a-z0-9?]+)#", line)
        if m is None:
            return "*Illegal format#"
        item, value = m.groups()
        if item == "pow":
            if value in ("on", "off"):
                self.power = 1 if value == "on" else 0
            elif value != "?":
                return "*Illegal format#"
            return f"*POW={'ON' if self.power else 'OFF'}#"
        if item == "ltim" and value == "?":
            return f"*LTIM={self.lamp_hours}#"
        if item == "sour":
            if not self.power:
                return "*Block item#"
            if value in BENQ_INPUTS:
                self.input = BENQ_INPUTS[value]
            elif value != "?":
                return "*Illegal format#"
            return f"*SOUR={self.input}#"
        if item == "modelname" and value == "?":
            return f"*MODELNAME={self.model}#"
        return "*Unsupported item#"


async def _main(args: argparse.Namespace) -> None:
    async with SerialDisplay(args.link, args.family, power=1 if args.on else 0):
        print(f"{args.family} on {args.link}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A simulated RS-232 panel or projector on a pty.")
    p.add_argument("--link", required=True, help="the path the gateway opens, e.g. /tmp/edugate/ttyPANEL")
    p.add_argument("--family", choices=FAMILIES, default="lg-panel")
    p.add_argument("--on", action="store_true", help="start powered on")
    args = p.parse_args(argv)
    Path(args.link).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
