"""What a gateway component needs to offer a command: :class:`CommandArgs` (its arguments' base model) and the
:class:`CommandRegistry` it registers its handler in. Apart from :mod:`edugate.gateway.downlink.commands` (the
envelope checks, Ed25519) so that a component can define and register commands without loading cryptography,
which a gateway with its downlink off never needs."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from edugate.contract.ids import COMMAND_NAME_PATTERN

_NAME_RE = re.compile(COMMAND_NAME_PATTERN)

current_command_id: ContextVar[str | None] = ContextVar("current_command_id", default=None)
"""The id of the command whose handler is running (set by the downlink around each handler call): a handler that
reports its outcome later (an event after a restart) names the command with it."""

A = TypeVar("A", bound=BaseModel)
Handler = Callable[[Any], Awaitable[Mapping[str, Any] | None]]


class CommandArgs(BaseModel):
    """A convenient base for argument models: unknown keys are errors (a typo is not silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Command:
    name: str
    args_model: type[BaseModel]
    handler: Handler
    description: str = ""


class CommandRegistry:
    """Command name -> (argument model, async handler). Gateway components register their commands here::

        registry.register("access.allowlist.set", AllowListArgs, allowlist.set_from_command)

    The handler gets the validated model and returns a JSON-serialisable mapping (the ``result``). To
    refuse, it raises :class:`drivers.base.CommandError` with a message for the operator.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(self, name: str, args_model: type[A], handler: Callable[[A], Awaitable[Mapping[str, Any] | None]],
                 *, description: str = "") -> None:
        if not (len(name) <= 64 and _NAME_RE.fullmatch(name)):
            raise ValueError(f"{name!r} is not a command name (dotted lower-case words, e.g. 'access.allowlist.set')")
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        if not (isinstance(args_model, type) and issubclass(args_model, BaseModel)):
            raise TypeError(f"the arguments of {name!r} must be a pydantic model class")
        self._commands[name] = Command(name, args_model, handler, description)

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands
