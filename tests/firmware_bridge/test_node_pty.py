"""The reference node module, run as a process on one end of a pseudo-terminal, against the gateway's session
on the other end: real bytes through a real tty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from edugate.firmware_bridge.host.session import KitRefused, KitSession
from edugate.firmware_bridge.protocol import Ack, CapabilityKind, Command, Frame, Nack, Readings, Reason, encode
from edugate.simulators.kit_node import KitNodeProcess
from tests.firmware_bridge.conftest import gateway_end

pytestmark = pytest.mark.timeout(20)


async def _next_readings(session: KitSession) -> Frame:
    while True:
        frame = await asyncio.wait_for(session.incoming.get(), 5)
        if isinstance(frame.message, Readings):
            return frame


async def test_node_introduces_itself_sends_readings_and_obeys_commands(
        make_kit: Callable[..., KitNodeProcess]) -> None:
    kit = make_kit(board="microbit-v2", firmware="1.0.0", node_id="lab-kit-7")
    kit.start()
    async with gateway_end(kit) as (session, problems):
        hello = await session.handshake(5)
        assert (hello.node_id, hello.board, hello.firmware, hello.slot) == ("lab-kit-7", "microbit-v2", "1.0.0", 0)
        assert [(c.kind, c.name, c.unit) for c in hello.capabilities] == [
            (CapabilityKind.SENSOR, "temperature", "°C"), (CapabilityKind.SENSOR, "light", "lx"),
            (CapabilityKind.ACTUATOR, "led", "")]

        frame = await _next_readings(session)
        assert isinstance(frame.message, Readings)
        channels = [ch for ch, _ in frame.message.values]
        assert channels == [0, 1]
        temperature = frame.message.values[0][1]
        assert 18.0 <= temperature <= 24.0
        session.send(Ack(frame.seq))

        assert await session.request(Command("led", "on"), 5) == Ack(session._seq - 1, "led on")
        answer = await session.request(Command("led", "blink"), 5)
        assert isinstance(answer, Nack) and answer.reason == Reason.BAD_VALUE
        assert answer.detail == "led takes on or off, not blink"
        answer = await session.request(Command("fan", "on"), 5)
        assert isinstance(answer, Nack) and answer.reason == Reason.UNKNOWN_ACTUATOR
        assert answer.detail == "no actuator 'fan' (this node has: led)"
        assert problems == []


async def test_node_reset_and_garbage_are_counted_and_the_link_recovers(
        make_kit: Callable[..., KitNodeProcess]) -> None:
    kit = make_kit()
    kit.start()
    async with gateway_end(kit) as (session, problems):
        await session.handshake(5)
        before = session.hellos
        kit.kill()
        kit.start()
        hello = await session.wait_hello(5, after=before)
        assert hello.firmware == "1.0.0"
        assert session.counters["node_restarts"] >= 1

        kit.inject(b"\x03\x41\x42\x00")  # a COBS frame too short to be one
        wrong = bytearray(encode(Readings(5, ((0, 1.0),)), 9))
        wrong[8] ^= 0x10
        kit.inject(bytes(wrong))  # a reading with one bit flipped on the line
        await _next_readings(session)
        assert session.counters["bad_frames_short"] == 1
        assert session.counters["bad_frames_crc"] == 1
        assert problems.kinds() == ["short", "crc"]
        assert "CRC mismatch" in problems[1][1]
        assert isinstance(await session.request(Command("led", "off"), 5), Ack)


async def test_a_node_speaking_another_protocol_version_is_refused_by_name(
        make_kit: Callable[..., KitNodeProcess]) -> None:
    kit = make_kit(protocol_version=2)
    kit.start()
    async with gateway_end(kit) as (session, problems):
        with pytest.raises(KitRefused) as info:
            await session.handshake(5)
        assert str(info.value) == ("kit refused: it speaks protocol version 2, not spoken here (protocol version 2 is "
                                   "not supported: this gateway speaks protocol version 1)")
        assert session.hello is None
        assert session.counters["refused_version"] >= 1
        assert "version" in problems.kinds()
