"""The ``web:`` section of a gateway config: the local status and live-readings pages."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edugate.drivers.base import ID_PATTERN

VALUE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    min: float | None = Field(None, description="Readings below this are drawn and listed as too low.")
    max: float | None = Field(None, description="Readings above this are drawn and listed as too high.")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


class WebTls(_Strict):
    cert_file: Path = Field(description="The pages' certificate (PEM; intermediate certificates after it), for the "
                            "name or address people type, from a CA the school's computers trust (the school's or "
                            "district's, or a public one).")
    key_file: Path = Field(description="Its private key (PEM, mode 0600, readable by the edugate user).")


class WebConfig(_Strict):
    enabled: bool = Field(False, description="Serve the status and live-readings pages from the gateway.")
    host: str = Field("127.0.0.1", description="Address to listen on. 127.0.0.1 = this machine only; set the "
                      "gateway's LAN address (e.g. 192.168.10.5) for the school network. Never a public address.")
    port: int = Field(8080, ge=1, le=65535)
    users_file: Path | None = Field(None, description="Who may log in (made with 'edugate web-user add'); "
                                    "default: web-users.json next to the outbox.")
    history_minutes: int = Field(60, ge=1, le=24 * 60, description="How much recent telemetry the gateway "
                                 "keeps in memory for the plots and the CSV download.")
    history_resolution_s: float = Field(1.0, gt=0, le=3600, description="At most one point per value per "
                                        "this many seconds is kept (the newest wins).")
    tls: WebTls | None = Field(None, description="Serve the pages over HTTPS with this certificate (the session "
                               "cookie is then sent over HTTPS only); none = plain HTTP, fine on 127.0.0.1.")
    thresholds: dict[str, dict[str, Threshold]] = Field(
        default_factory=dict, description="Limits drawn on the live plots: {device id: {value name: {min, max}}}.")

    @model_validator(mode="after")
    def _names(self) -> WebConfig:
        for device, values in self.thresholds.items():
            if not re.match(ID_PATTERN, device):
                raise ValueError(f"thresholds: {device!r} is not a device id")
            for name in values:
                if not re.match(VALUE_NAME_PATTERN, name):
                    raise ValueError(f"thresholds.{device}: {name!r} is not a value name")
        return self

    def check_devices(self, device_ids: set[str]) -> None:
        """Raise ValueError naming a threshold for a device the config does not have."""
        unknown = sorted(set(self.thresholds) - device_ids)
        if unknown:
            raise ValueError(f"web.thresholds: unknown device(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(device_ids)) or 'none'})")

    def resolved(self, base: Path) -> WebConfig:
        """Relative ``users_file`` and TLS files are relative to the config file's folder ``base``."""
        update: dict[str, object] = {}
        if self.users_file is not None and not self.users_file.is_absolute():
            update["users_file"] = (base / self.users_file).resolve()
        if self.tls is not None:
            update["tls"] = WebTls(cert_file=(base / self.tls.cert_file).resolve(),
                                   key_file=(base / self.tls.key_file).resolve())
        return self.model_copy(update=update) if update else self

    def users_path(self, data_dir: Path) -> Path:
        return self.users_file or data_dir / "web-users.json"
