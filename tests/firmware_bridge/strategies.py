"""Hypothesis strategies for kit link messages."""

from __future__ import annotations

from hypothesis import strategies as st

from edugate.firmware_bridge.protocol import (
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
    Message,
    Nack,
    Readings,
    Reason,
)


def _text(max_bytes: int = 255) -> st.SearchStrategy[str]:
    return st.text(max_size=60).filter(lambda s: len(s.encode("utf-8")) <= max_bytes)


u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
capabilities = st.builds(Capability, st.sampled_from(list(CapabilityKind)), _text(), _text())
finite = st.floats(allow_nan=False)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, _text(), _text(), _text(), u16, u8, st.lists(capabilities, max_size=8).map(tuple)),
    st.builds(HelloRequest, st.lists(u8, max_size=8).map(tuple)),
    st.builds(Readings, u32, st.lists(st.tuples(u8, finite), max_size=40).map(tuple)),
    st.builds(Command, _text(), _text()),
    st.builds(Ack, u16, _text()),
    st.builds(Nack, u16, st.sampled_from(list(Reason)), _text()),
    st.builds(Log, u8, _text()),
    st.builds(FwBegin, st.binary(max_size=600), st.binary(min_size=64, max_size=64)),
    st.builds(FwChunk, u32, st.binary(max_size=1020)),
    st.builds(FwStatus, u16, u32),
    st.builds(FwCommit, st.binary(min_size=32, max_size=32)),
)
