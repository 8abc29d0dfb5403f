"""A byte stream from a serial port -> decoded frames and counted errors. No I/O."""

from __future__ import annotations

from edugate.firmware_bridge.protocol.errors import CodecError
from edugate.firmware_bridge.protocol.framing import MAX_ENCODED
from edugate.firmware_bridge.protocol.messages import SUPPORTED_VERSIONS, Frame, decode


class FrameSplitter:
    """Feed it the bytes as they arrive; it returns each complete frame decoded, or the :class:`CodecError`
    that says why it is not one. Empty frames (a 0x00 sent to resynchronise) are skipped silently; a run
    of more than :data:`MAX_ENCODED` bytes without a delimiter is reported once and dropped up to the next
    delimiter, so garbage can never grow the buffer."""

    def __init__(self, supported: tuple[int, ...] = SUPPORTED_VERSIONS) -> None:
        self.supported = supported
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | CodecError]:
        out: list[Frame | CodecError] = []
        start = 0
        while start < len(data):
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                self._buf += piece
                if len(self._buf) > MAX_ENCODED:
                    out.append(CodecError("oversized", f"more than {MAX_ENCODED} bytes without a frame delimiter "
                                                       "(garbage on the line, or a wrong baudrate?); dropped up to "
                                                       "the next delimiter"))
                    self._buf.clear()
                    self._skipping = True
            if end < 0:
                break
            if not self._skipping and self._buf:
                try:
                    out.append(decode(bytes(self._buf), self.supported))
                except CodecError as exc:
                    out.append(exc)
            self._buf.clear()
            self._skipping = False
            start = end + 1
        return out

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened)."""
        self._buf.clear()
        self._skipping = False
