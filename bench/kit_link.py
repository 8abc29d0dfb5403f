"""The lab kits' serial link (docs/firmware-bridge.md): what its codec costs and how fast a firmware update goes.

Measured, in this process:

* CRC-32 of a 256-byte frame body: ``binascii.crc32`` (what the gateway uses) against the ``crc`` package's
  ``Calculator(Crc32.CRC32)`` (the same function, pure Python; also with ``optimized=True``, its table) and the
  reference node's own table CRC (what a micro:bit without ``binascii`` runs), microseconds per call;
* the gateway codec: encode + decode of a READINGS frame (3 values) and of a 256-byte FW_CHUNK, frames/s;
* a signed firmware update of ``--image-kb`` KiB through the gateway's sender to the reference node (a CPython
  subprocess on a pseudo-terminal, which has no baud rate), in KiB/s, and what the same frames would take at
  115200 bit/s 8N1 (the wire bytes counted / 11 520 bytes/s, plus the node's answers).

    .venv/bin/python bench/kit_link.py [--image-kb 240]   # prints JSON, writes bench/results/kit_link.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from crc import Calculator, Crc32
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edugate.drivers.serial_link import SerialLink
from edugate.firmware_bridge.host.session import KitSession
from edugate.firmware_bridge.node import edulink
from edugate.firmware_bridge.protocol import FwChunk, Readings, crc32, decode, encode
from edugate.firmware_bridge.update.manifest import sign_image
from edugate.firmware_bridge.update.sender import UpdateSettings, send_update
from edugate.simulators.kit_node import KitNodeProcess

REPO = Path(__file__).resolve().parents[1]
BYTES_PER_S_115200 = 115200 / 10  # 8N1: 10 bits per byte


def _per_call_us(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def crc_costs() -> dict[str, float]:
    body = random.Random(1).randbytes(256)
    calc, table = Calculator(Crc32.CRC32), Calculator(Crc32.CRC32, optimized=True)
    assert calc.checksum(body) == table.checksum(body) == crc32(body) == edulink.crc32_py(body)
    return {"binascii_us": round(_per_call_us(lambda: crc32(body), 20000), 2),
            "crc_package_us": round(_per_call_us(lambda: calc.checksum(body), 50), 1),
            "crc_package_optimized_us": round(_per_call_us(lambda: table.checksum(body), 200), 1),
            "node_table_crc_us": round(_per_call_us(lambda: edulink.crc32_py(body), 200), 1)}


def codec_rates() -> dict[str, float]:
    out = {}
    for name, message in (("readings", Readings(123456, ((0, 21.5), (1, 300.0), (2, 0.0)))),
                          ("fw_chunk_256", FwChunk(4096, random.Random(2).randbytes(256)))):
        wire = encode(message, 7)
        us = _per_call_us(lambda w=wire, m=message: decode(encode(m, 7)[:-1]), 2000)  # type: ignore[misc]
        out[f"{name}_encode_decode_per_s"] = round(1e6 / us)
        out[f"{name}_wire_bytes"] = len(wire)
    return out


async def update_rate(image_kb: int) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    image = random.Random(3).randbytes(image_kb * 1024)
    signed = sign_image(image, "microbit-v2", "1.1.0", key)
    with tempfile.TemporaryDirectory() as tmp:
        kit = KitNodeProcess(Path(tmp) / "tty", Path(tmp) / "state", interval_ms=60_000)
        kit.start()
        link = SerialLink(str(kit.link), 115200)
        link.open()
        written = 0
        write = link.write

        def counting(data: bytes) -> None:
            nonlocal written
            written += len(data)
            write(data)

        link.write = counting  # type: ignore[method-assign]
        session = KitSession(link)
        pump = asyncio.create_task(session.pump(0.5))
        try:
            await session.handshake(5)
            started = time.monotonic()
            result = await send_update(session, signed, image, key.public_key(), UpdateSettings(chunk_size=256))
            took = time.monotonic() - started
        finally:
            pump.cancel()
            link.close()
            kit.close()
    assert result.ok, result.detail
    answers = len(image) // 256 * 15  # one FW_STATUS (about 15 wire bytes) per chunk, the other way
    at_115200 = max(written, answers) / BYTES_PER_S_115200  # full duplex: the longer direction
    return {"image_kib": image_kb, "seconds_over_pty": round(took, 2), "kib_per_s_over_pty": round(image_kb / took),
            "gateway_wire_bytes": written, "overhead_percent": round(100 * (written / len(image) - 1), 1),
            "seconds_at_115200_8n1_wire_only": round(at_115200, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-kb", type=int, default=240)
    args = p.parse_args()
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_implementation()} "
                      f"{platform.python_version()}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "crc32_256_bytes": crc_costs(), "codec": codec_rates(), "update": asyncio.run(update_rate(args.image_kb))}
    crcs = out["crc32_256_bytes"]
    crcs["crc_package_vs_binascii"] = round(crcs["crc_package_us"] / crcs["binascii_us"])
    crcs["crc_package_optimized_vs_binascii"] = round(crcs["crc_package_optimized_us"] / crcs["binascii_us"])
    text = json.dumps(out, indent=1)
    print(text)
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "kit_link.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
