"""The Arduino header (firmware_bridge/arduino/edugate_link.h), compiled with the Debian toolchain as C99 and as
C++, against the shared vectors and against the gateway codec on random frames."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from edugate.firmware_bridge.make_vectors import VECTORS_PATH
from edugate.firmware_bridge.protocol import (
    CodecError,
    Frame,
    FrameSplitter,
    Message,
    crc32,
    decode,
    encode,
    encode_body,
)
from tests.firmware_bridge.strategies import messages

HEADER_DIR = VECTORS_PATH.parent / "arduino"
HARNESS = Path(__file__).with_name("edl_harness.c")
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
ERR = {-1: "empty", -2: "oversized", -3: "cobs", -4: "short", -5: "crc", -6: "length"}


class Harness:
    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def rx(self, data: bytes) -> list[tuple[int, int, int, bytes] | str]:
        words = self.ask(f"rx {data.hex() or '-'}").split()
        out: list[tuple[int, int, int, bytes] | str] = []
        i = 0
        while words[i] != "end":
            if words[i] == "frame":
                payload = b"" if words[i + 4] == "-" else bytes.fromhex(words[i + 4])
                out.append((int(words[i + 1]), int(words[i + 2]), int(words[i + 3]), payload))
                i += 5
            else:
                out.append(ERR[int(words[i + 1])])
                i += 2
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(5)


def _compile(tmp: Path, compiler: str, std: str) -> Path:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    exe = tmp / f"edl_{compiler.replace('+', 'p')}"
    lang = ["-x", "c++"] if compiler == "g++" else []
    subprocess.run([compiler, *lang, f"-std={std}", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    "-Wconversion" if compiler == "gcc" else "-Wshadow", f"-I{HEADER_DIR}", str(HARNESS), "-o",
                    str(exe)], check=True, capture_output=True, text=True)
    return exe


@pytest.fixture(scope="module", params=[("gcc", "c99"), ("g++", "c++11")], ids=["c99", "c++11"])
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    try:
        exe = _compile(tmp_path_factory.mktemp("edl"), *request.param)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"the header does not compile cleanly:\n{exc.stderr}")
    h = Harness(exe)
    yield h
    h.close()


def test_crc_and_cobs_vectors(harness: Harness) -> None:
    for v in VECTORS["crc32"]:
        assert harness.ask(f"crc {v['data'] or '-'}") == v["crc"]
    for v in VECTORS["cobs"]:
        assert harness.ask(f"cobs {v['data'] or '-'}") == v["encoded"]


def test_frame_vectors_encode_and_decode(harness: Harness) -> None:
    for v in VECTORS["frames"]:
        body = bytes.fromhex(v["body"])
        payload = body[6:]
        assert harness.ask(f"enc 1 {v['type']} {v['seq']} {payload.hex() or '-'}") == v["wire"]
        assert harness.rx(bytes.fromhex(v["wire"])) == [(1, v["type"], v["seq"], payload)]


def test_corrupt_vectors_are_refused_for_the_same_reason(harness: Harness) -> None:
    for v in VECTORS["corrupt"]:
        assert harness.rx(bytes.fromhex(v["encoded"]) + b"\x00") == [v["kind"]], v["name"]


def test_every_single_bit_flip_is_detected(harness: Harness) -> None:
    wire = bytes.fromhex(next(v for v in VECTORS["frames"] if v["name"] == "hello")["wire"])
    for i in range(len(wire)):
        for bit in range(8):
            out = harness.rx(wire[:i] + bytes((wire[i] ^ (1 << bit),)) + wire[i + 1:] + b"\x00")
            assert out and all(isinstance(x, str) for x in out), (i, bit, out)


def test_oversized_runs_are_dropped_and_the_next_frame_decodes(harness: Harness) -> None:
    good = bytes.fromhex(VECTORS["frames"][0]["wire"])
    assert harness.rx(b"\x55" * 3000 + b"\x00" + good)[0] == "oversized"
    assert len(harness.rx(b"\x55" * 3000 + b"\x00" + good)) == 2


@settings(max_examples=150, deadline=None)
@given(messages, st.integers(0, 0xFFFF))
def test_random_frames_agree_with_the_gateway_codec(harness: Harness, message: Message, seq: int) -> None:
    body = encode_body(message, seq)
    wire = harness.ask(f"enc 1 {int(message.TYPE)} {seq} {body[6:].hex() or '-'}")
    assert wire == encode(message, seq).hex()
    assert harness.rx(bytes.fromhex(wire)) == [(1, int(message.TYPE), seq, body[6:])]
    assert FrameSplitter().feed(bytes.fromhex(wire)) == [Frame(seq, message)]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1200))
def test_random_bytes_agree_with_the_gateway_codec(harness: Harness, data: bytes) -> None:
    assert harness.ask(f"crc {data.hex() or '-'}") == f"{crc32(data):08x}"
    assert harness.ask(f"cobs {data.hex() or '-'}") == cobs.encode(data).hex()
    chunk = data.replace(b"\x00", b"")
    if chunk:
        c_result = harness.rx(chunk + b"\x00")
        try:
            frame = decode(chunk)
        except CodecError as exc:
            if exc.kind in ("type", "payload", "version"):  # past the framing: the C side hands the frame over
                assert len(c_result) == 1 and isinstance(c_result[0], tuple)
            else:
                assert c_result == [exc.kind]
        else:
            assert c_result == [(1, int(frame.message.TYPE), frame.seq, encode_body(frame.message, frame.seq)[6:])]
