"""The ``downlink:`` section of a gateway config.

Kept apart from :mod:`gateway.commands` so that reading a config does not load
the command machinery and ``cryptography`` (several MB of RSS) on gateways that
do not accept commands.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DownlinkSetupError(Exception):
    """The downlink cannot start: a key file or the replay store is unusable. The message names the file."""


class DownlinkConfig(BaseModel):
    """The ``downlink:`` section of a gateway config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Accept signed commands from central on .../cmd/#.")
    public_keys: list[Path] = Field(default_factory=list, max_length=8, description="Central's Ed25519 public "
                                    "keys (PEM files from 'edugate keygen'); a command signed by any of them is "
                                    "accepted. List two during a key rotation.")
    max_lifetime_s: int = Field(86_400, ge=1, le=30 * 86_400, description="Refuse commands whose expires_at - "
                                "issued_at is longer than this.")
    clock_skew_s: int = Field(300, ge=0, le=86_400, description="Accept commands issued at most this far in the "
                              "future of the gateway clock.")
    replay_store: Path | None = Field(None, description="File remembering accepted command ids until they expire "
                                      "(default: commands-seen.json next to the outbox).")
    replay_max_entries: int = Field(10_000, ge=10, le=1_000_000, description="Live command ids remembered at most; "
                                    "beyond it new commands are refused until some expire.")
    handler_timeout_s: float = Field(30.0, gt=0, le=3600, description="A command handler that takes longer "
                                     "fails with a timeout.")

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> DownlinkConfig:
        if self.enabled and not self.public_keys:
            raise ValueError("public_keys: an enabled downlink needs at least one central public key (PEM file)")
        return self

    def replay_path(self, outbox_path: Path) -> Path:
        """Where the replay store lives: ``replay_store``, or next to the outbox."""
        return self.replay_store or outbox_path.with_name("commands-seen.json")

    def resolved(self, base: Path) -> DownlinkConfig:
        """Relative paths made relative to ``base`` (the config file's folder)."""
        keys = [p if p.is_absolute() else (base / p).resolve() for p in self.public_keys]
        store = self.replay_store
        if store is not None and not store.is_absolute():
            store = (base / store).resolve()
        return self.model_copy(update={"public_keys": keys, "replay_store": store})
