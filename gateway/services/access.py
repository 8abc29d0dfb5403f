"""Door and lab access decided on the gateway, from an allow-list of pseudonyms pushed by central.

The allow-list lives in a JSON file on disk, written atomically, and carries a
version: a push older than what the gateway has is refused. Doors keep
working while the uplink is down; every decision is the ``card_tap`` event
itself, annotated with ``decision`` (allow/deny), ``allowlist_version`` and
``offline`` (no allow-list at all: deny, and say so).

Allow-list document (also the args of the ``access.allowlist.set`` command)::

    {"version": 7, "lists": {"*": ["p1-..."], "lab-2": ["p1-..."], "door-3": ["p1-..."]}}

A card is allowed at a reader if its pseudonym is in the list of the reader's
device id, of its room, or of ``"*"``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from edugate.gateway.services.base import Command, Section, Service, ServiceSetup, card_taps, card_taps_at

log = logging.getLogger(__name__)

PSEUDONYM_PATTERN = r"^p1-[0-9a-f]{32}$"
Pseudonym = Annotated[str, Field(pattern=PSEUDONYM_PATTERN)]


class AccessConfig(BaseModel):  # the ``access:`` section of the config (a docstring would enter the schema)
    model_config = ConfigDict(extra="forbid", frozen=True)

    allowlist_file: Path | None = Field(None, description="Where the allow-list pushed by central is kept "
                                        "(default: allowlist.json next to the outbox).")


class AccessStatus(TypedDict):
    allowlist_version: int
    allow: int
    deny: int


class AllowList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="Increases with every push; older pushes are refused.")
    lists: dict[str, list[Pseudonym]] = Field(description="Device id, room, or '*' -> pseudonyms allowed there.")

    def allowed(self, card: str, device: str, room: str | None) -> bool:
        for key in (device, room, "*"):
            if key is not None and card in self._sets.get(key, ()):
                return True
        return False

    def model_post_init(self, _context: Any) -> None:
        self._sets = {key: frozenset(cards) for key, cards in self.lists.items()}


class AllowListRejected(ValueError):
    pass


class AccessControl(Service):
    name = "access"
    order = 10
    section = Section("access", AccessConfig, required=True)
    observes = (card_taps_at("door", "lab"),)

    @classmethod
    def from_config(cls, setup: ServiceSetup) -> AccessControl | None:
        """On a gateway with a door or lab reader."""
        if not setup.readers("door", "lab"):
            return None
        section = setup.section if isinstance(setup.section, AccessConfig) else AccessConfig()
        return cls(section.allowlist_file or setup.data_dir / "allowlist.json",
                   {d.id: d.room for d in setup.devices})

    def __init__(self, path: Path, rooms: dict[str, str | None]) -> None:
        self.path = Path(path)
        self.rooms = rooms
        self.allowlist: AllowList | None = None
        self.decisions = {"allow": 0, "deny": 0}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            log.warning("no allow-list at %s yet: door and lab readers deny every card until central pushes one",
                        self.path)
            return
        try:
            self.allowlist = AllowList.model_validate_json(self.path.read_bytes())
        except ValueError as exc:
            log.error("allow-list %s is unreadable (%s): denying every card until a new one is pushed",
                      self.path, str(exc).splitlines()[0])

    def replace(self, new: AllowList) -> dict[str, Any]:
        """Store a pushed allow-list (atomically, durably) if it is newer than the current one."""
        current = self.allowlist.version if self.allowlist else 0
        if new.version <= current:
            raise AllowListRejected(f"allow-list version {new.version} is not newer than {current}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(new.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.allowlist = new
        cards = sum(len(v) for v in new.lists.values())
        log.info("allow-list version %d stored (%d lists, %d entries)", new.version, len(new.lists), cards)
        return {"version": new.version, "lists": len(new.lists), "entries": cards}

    def stage(self, record: dict[str, Any]) -> dict[str, Any] | None:
        data = card_taps(record, "door", "lab")
        if data is None:
            return record
        device = record["device"]
        if self.allowlist is None:
            data.update(decision="deny", allowlist_version=0, reason="no allow-list")
        else:
            ok = self.allowlist.allowed(data["card"], device, self.rooms.get(device))
            data.update(decision="allow" if ok else "deny", allowlist_version=self.allowlist.version)
        self.decisions[data["decision"]] += 1
        return record

    def commands(self) -> dict[str, Command]:
        async def set_allowlist(args: AllowList) -> dict[str, Any]:
            return self.replace(args)

        return {"access.allowlist.set": Command(AllowList, set_allowlist)}

    def status(self) -> AccessStatus:
        return {"allowlist_version": self.allowlist.version if self.allowlist else 0,
                "allow": self.decisions["allow"], "deny": self.decisions["deny"]}

    def state_files(self) -> list[Path]:
        return [self.path]

