"""The config of one BLE probe (``driver: ble``). No Bluetooth library is imported here: a config that names
BLE probes validates on a machine without bleak."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from edugate.drivers.base import DeviceConfig

MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
KEY_RE = re.compile(r"^[0-9A-Fa-f]{32}$")


def _address(value: str) -> str:
    if not MAC_RE.match(value):
        raise ValueError(f"{value!r} is not a Bluetooth address: give six hex pairs such as A4:C1:38:12:34:56 "
                         "(printed on the probe's box or shown by its configuration page)")
    return value.upper()


def _bind_key(value: SecretStr) -> SecretStr:
    if not KEY_RE.match(value.get_secret_value()):
        raise ValueError("the bind key must be 32 hexadecimal characters (16 bytes), as the probe's "
                         "configuration page shows it")
    return value


Address = Annotated[str, AfterValidator(_address)]
BindKey = Annotated[SecretStr, AfterValidator(_bind_key)]


class BleProbeConfig(DeviceConfig):
    """A BLE probe heard by the gateway's Bluetooth adapter (advertisements only, no connection)."""

    driver: Literal["ble"]
    address: Address = Field(description="The probe's Bluetooth address, e.g. A4:C1:38:12:34:56.")
    format: Literal["auto", "bthome", "atc1441", "pvvx"] = Field(
        "auto", description="What the probe advertises: BTHome v2 (service data FCD2), or the custom "
        "thermometer firmware's ATC1441 or PVVX format (service data 181A). 'auto' takes whichever comes.")
    bind_key: BindKey | None = Field(None, description="BTHome encryption key of this probe (32 hex "
                                     "characters). Set it for an encrypted probe; plaintext is then refused.")
    adapter: str = Field("hci0", pattern=r"^hci[0-9]{1,2}$", description="The Bluetooth adapter that hears the "
                         "probe. Every probe on one adapter shares one scan.")
    offline_after_s: float = Field(300.0, ge=0.5, le=86400, description="No readable advertisement for this "
                                   "long: the probe is reported offline (out of range, flat battery).")
    dedup_window_s: float = Field(30.0, ge=0, le=600, description="An advertisement repeating the packet id "
                                  "(or the bytes) of the previous one within this time counts once.")

    @model_validator(mode="after")
    def _key_only_for_bthome(self) -> BleProbeConfig:
        if self.bind_key is not None and self.format in ("atc1441", "pvvx"):
            raise ValueError(f"bind_key is for BTHome probes; the {self.format} format is not encrypted (flash "
                             "the probe to advertise BTHome with encryption, or leave bind_key out)")
        return self
