"""The ``kit`` driver's options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edugate.drivers.base import DeviceConfig, SerialPortPath


class KitConfig(DeviceConfig):
    """A lab kit (micro:bit, ESP32, Arduino) running firmware that speaks the EduGate kit link."""

    driver: Literal["kit"]
    port: SerialPortPath
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = Field(
        115200, description="Line speed in bit/s (the reference firmware uses 115200; USB CDC ignores it).")
    hello_timeout_s: float = Field(5.0, ge=0.1, le=120, description="How long the kit may take to introduce "
                                   "itself (HELLO) after the port opens or the gateway asks again.")
    answer_timeout_s: float = Field(2.0, ge=0.05, le=60, description="How long the kit may take to answer a "
                                    "command or a firmware chunk.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="When the kit is unplugged, try to reopen "
                                "its port after 0.5 s, then twice as long each time, up to this many seconds apart.")
    firmware_dir: str | None = Field(None, pattern=r"^/", description="Folder of firmware images (<name>.bin "
                                     "with <name>.bin.manifest.json beside it) that 'firmware-update' may send.")
    firmware_key: str | None = Field(None, pattern=r"^/", description="Central's Ed25519 public key (PEM) that "
                                     "firmware manifests must be signed with. Without it no update is sent.")
    chunk_size: int = Field(256, ge=16, le=1020, description="Firmware bytes per frame (at most the kit's own "
                            "limit from its HELLO).")
