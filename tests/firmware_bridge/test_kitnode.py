"""The reference node's logic in-process, with a hand-turned clock: link-up, repeats, readings, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edugate.firmware_bridge.node import kitnode
from edugate.firmware_bridge.protocol import (
    Ack,
    Command,
    Frame,
    FrameSplitter,
    FwBegin,
    Hello,
    HelloRequest,
    Log,
    Message,
    Nack,
    Readings,
    Reason,
    encode,
)


class Harness:
    def __init__(self, state_dir: Path | None) -> None:
        self.now = 0
        self.out = FrameSplitter()
        self.frames: list[Frame] = []
        self.temperature = 21.5

        def temperature() -> float:
            if self.temperature is None:
                raise OSError("sensor not answering")
            return self.temperature

        self.node = kitnode.KitNode(
            node_id="n1", board="microbit-v2", sensors=[kitnode.Sensor("temperature", "°C", temperature)],
            actuators=[], write=self._write, clock_ms=lambda: self.now,
            state_dir=None if state_dir is None else str(state_dir), factory_version="1.0.0", interval_ms=1000)

    def _write(self, data: bytes) -> None:
        for item in self.out.feed(data):
            assert isinstance(item, Frame), item
            self.frames.append(item)

    def take(self) -> list[Frame]:
        out, self.frames = self.frames, []
        return out

    def gateway_sends(self, message: Message, seq: int) -> list[Frame]:
        self.node.receive(encode(message, seq))
        return self.take()

    def at(self, ms: int) -> list[Frame]:
        self.now = ms
        self.node.tick()
        return self.take()


def test_hello_repeats_until_any_of_them_is_acknowledged_then_readings_flow() -> None:
    h = Harness(None)
    [boot] = h.take()
    assert boot.seq == 0 and isinstance(boot.message, Hello) and boot.message.firmware == "1.0.0"
    assert h.at(999) == []
    [again] = h.at(1000)
    assert again.seq == 1 and isinstance(again.message, Hello)
    assert h.gateway_sends(Command("led", "on"), 0) == [Frame(2, Nack(0, Reason.NOT_READY,
                                                                      "node has not been accepted yet (no ACK of its "
                                                                      "HELLO)"))]
    assert h.gateway_sends(Ack(0, "welcome"), 1) == []  # the ACK of the first HELLO links it, though a repeat went
    [reading] = h.at(1001)
    assert reading.message == Readings(1001, ((0, 21.5),))
    assert h.at(2000) == []
    h.temperature = None
    [log] = h.at(2001)
    assert log.message == Log(30, "sensor temperature failed: sensor not answering")


def test_a_board_without_slots_refuses_updates_and_a_bad_frame_is_logged_once() -> None:
    h = Harness(None)
    h.gateway_sends(Ack(0), 0)
    h.take()
    [nack] = h.gateway_sends(FwBegin(b"{}", bytes(64)), 5)
    assert nack.message == Nack(5, Reason.FW_IO_ERROR, "this board has no firmware slots: it is updated over USB")
    h.node.receive(b"\x05\x01\x02\x00")
    assert h.node.counters["bad_frames"] == 1
    frames = h.at(1000)
    assert [f.message for f in frames if isinstance(f.message, Log)] == [Log(30, "1 bad frames received (noise on "
                                                                                 "the line?)")]


def test_hello_request_makes_the_node_introduce_itself_again(tmp_path: Path) -> None:
    h = Harness(tmp_path / "fw")
    h.gateway_sends(Ack(0), 0)
    [hello] = h.gateway_sends(HelloRequest((1,)), 3)
    assert isinstance(hello.message, Hello) and hello.seq != 0  # seq 0 only right after boot
    [refusal_hello] = h.gateway_sends(HelloRequest((2, 3)), 4)  # a gateway that speaks only newer versions
    assert isinstance(refusal_hello.message, Hello)
    assert h.node.refused


MICROBIT_NODE = r"""
import sys
for missing in ("json", "hashlib", "uhashlib", "binascii", "ubinascii"):  # what micro:bit MicroPython lacks
    sys.modules[missing] = None
sys.path.insert(0, sys.argv[1])
import kitnode, edulink

out = []
node = kitnode.KitNode(node_id="mb-1", board="microbit-v2", sensors=[kitnode.Sensor("temperature", "C", lambda: 21.0)],
                       actuators=[], write=out.append, clock_ms=lambda: 0, state_dir=None)
node.receive(edulink.encode_frame(edulink.ACK, 0, edulink.pack_ack(0)))
node.receive(edulink.encode_frame(edulink.FW_BEGIN, 1, b"\x02\x00{}" + bytes(64)))
sys.stdout.write(b"".join(out).hex())
"""


def test_the_node_runs_without_the_modules_a_microbit_lacks() -> None:
    """micro:bit MicroPython has no json, hashlib or binascii: the node (no slots there) still links and says why it
    cannot update, with its own CRC-32."""
    node_dir = Path(kitnode.__file__).parent
    run = subprocess.run([sys.executable, "-I", "-c", MICROBIT_NODE, str(node_dir)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    splitter = FrameSplitter()
    frames = [f for f in splitter.feed(bytes.fromhex(run.stdout)) if isinstance(f, Frame)]
    assert isinstance(frames[0].message, Hello) and frames[0].message.firmware == "1.0.0"
    assert frames[-1].message == Nack(1, Reason.FW_IO_ERROR, "this board has no firmware slots: it is updated over USB")
