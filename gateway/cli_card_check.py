"""``edugate card-check``: do two reads of one card give one pseudonym under the school's card identity rule?

An IT person taps the same card on two readers (``--tap DEVICE``, the gateway
stopped: the readers' ports are then free), or pastes two reads from the
readers' own test tools (``KIND:VALUE``, or ``DEVICE=KIND:VALUE`` to apply
that reader's ``card_identity`` override). The command says whether the reads
are one card under the school's rule (``privacy.card_identity`` of
``--config``) and, if not, which rule or reader setting would make them one.

It compares the reads' canonical numbers in memory only: it needs no key,
prints no pseudonym (that would bypass the audited ``edugate pseudonym``) and
never prints or logs a read. Reads left off the command line are asked for
with hidden input, so they stay out of the shell history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from edugate.common.card_identity import (
    FAMILY_NAMES,
    READ_KINDS,
    CardIdentityRule,
    Fix,
    Read,
    card_family,
    describe,
    fixes,
    parse_read,
    profile,
    same_card,
)
from edugate.gateway.config import ConfigError, GatewayConfigBase, load_config

SAME, DIFFERENT, USAGE = 0, 1, 2

KINDS_HELP = "; ".join(f"{k}: {v}" for k, v in READ_KINDS.items())


def _fail(message: str) -> typer.Exit:
    typer.echo(f"card-check: {message}", err=True)
    return typer.Exit(code=USAGE)


def _reader_config(cfg: GatewayConfigBase | None, device: str) -> object:
    if cfg is None:
        raise _fail(f"a read from device {device!r} needs --config (the gateway's config)")
    for dev in cfg.devices:
        if dev.id == device:
            if "card_identity" not in type(dev).model_fields:
                raise _fail(f"device {device!r} ({dev.driver}) is not a card reader")
            return dev
    raise _fail(f"no device {device!r} in the config")


def _pasted(text: str, cfg: GatewayConfigBase | None, name: str) -> Read:
    device, sep, spelled = text.partition("=")
    if not sep or ":" in device:
        device, spelled = "", text
    try:
        read = parse_read(spelled)
    except ValueError as exc:
        raise _fail(f"read {name}: {exc}") from None
    if device:
        dev = _reader_config(cfg, device.strip())
        read = Read(read.technology, read.raw, getattr(dev, "card_identity", None), f"{read.kind} at {device}")
    return read


async def _tap(cfg: GatewayConfigBase, device: str, name: str, timeout_s: float) -> Read:
    """Open the configured reader, wait for one card, close it. The read stays in memory."""
    from edugate.drivers.card_reader import CardReaderDriver
    from edugate.drivers.registry import driver_class

    dev = _reader_config(cfg, device)
    driver = driver_class(dev.driver)(dev)  # type: ignore[attr-defined]  # _reader_config: a reader's config
    if not isinstance(driver, CardReaderDriver):
        raise _fail(f"device {device!r} is not a card reader")
    typer.echo(f"read {name}: tap the card on {device} ({dev.driver}{', ' + str(dev.room) if dev.room else ''}) "  # type: ignore[attr-defined]  # as above
               f"within {timeout_s:g} s ...")
    reads = driver.reads()
    try:
        async with asyncio.timeout(timeout_s):
            card = await anext(reads)
    except TimeoutError:
        raise _fail(f"no card read on {device} within {timeout_s:g} s (is the gateway stopped? it holds the "
                    f"readers' ports; last problem: {driver.health.last_error or 'none'})") from None
    finally:
        with contextlib.suppress(Exception):
            await reads.aclose()  # type: ignore[attr-defined]  # reads() is an async generator
        await driver.close()
    return Read(card.technology, card.uid, getattr(dev, "card_identity", None), f"{card.technology} at {device}")


def _what(read: Read, family: str | None) -> str:
    prof = profile(read.technology, read.reader)
    fam = prof.family or family
    parts = [FAMILY_NAMES[fam] if fam else "card family not known"]
    if fam == "prox":
        parts.append(f"{prof.bits or 8 * len(read.raw)} bits of the EM ID")
    else:
        parts.append(f"{len(read.raw)} bytes")
    if prof.byte_order != "card":
        parts.append("bytes reversed")
    return f"{read.kind} ({', '.join(parts)})"


def _fix_text(fix: Fix, current: CardIdentityRule | None) -> str:
    school = [c for c in fix.changes if c.startswith(("prox_bits", "nfc_bytes"))]
    readers = [c for c in fix.changes if not c.startswith(("prox_bits", "nfc_bytes"))]
    out: list[str] = []
    if school:
        replaces = f", replaces: {current.version}" if current is not None else ""
        out.append(f"privacy.card_identity: {{{', '.join(school)}}} on every gateway of the school "
                   f"(version: {fix.rule.version}{replaces})")
    for change in readers:
        setting, _, reader = change.partition(" on ")
        out.append(f"card_identity: {{{setting}}} on {reader}")
    return "; ".join(out)


def card_check(
    reads: Annotated[list[str] | None, typer.Argument(help="Two reads as KIND:VALUE, or DEVICE=KIND:VALUE "
                                                      "(that reader's card_identity applies). KIND: " + KINDS_HELP
                                                      + ". Left off: asked for with hidden input.",
                                                      show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The gateway's config: its "
                                                "privacy.card_identity is the school's rule, its readers "
                                                "can be named.")] = None,
    tap: Annotated[list[str] | None, typer.Option(help="A card reader of the config to tap the card on "
                                                  "(twice for two readers; the gateway must be stopped).")] = None,
    card: Annotated[Literal["prox", "nfc"] | None, typer.Option(help="The card tapped: 'prox' (125 kHz) or "
                                                                 "'nfc' (13.56 MHz), when neither reader "
                                                                 "says.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each tap.")] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR: what the "
                                           "tapped readers' drivers log (to stderr; never a card number).")]
    = "WARNING",
) -> None:
    """Tell whether two reads of one card give one pseudonym under the school's rule; if not, which rule would.

    Prints no card number and no pseudonym. Exit status 0: one card; 1: two; 2: a usage problem.
    """
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise _fail(f"--log-level {log_level!r}: one of DEBUG, INFO, WARNING, ERROR")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg: GatewayConfigBase | None = None
    if config is not None:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            raise _fail(f"{config}: {exc}") from None
    texts, taps = list(reads or []), list(tap or [])
    if len(texts) + len(taps) > 2:
        raise _fail("give two reads in all (reads and --tap)")
    if taps and cfg is None:
        raise _fail("--tap needs --config (the gateway's config naming the reader)")
    got: list[Read] = []
    for i, text in enumerate(texts):
        got.append(_pasted(text, cfg, "AB"[i]))
    for device in taps:
        assert cfg is not None
        got.append(asyncio.run(_tap(cfg, device, "AB"[len(got)], timeout)))
    while len(got) < 2:
        name = "AB"[len(got)]
        got.append(_pasted(typer.prompt(f"read {name} (KIND:VALUE, hidden)", hide_input=True), cfg, name))
    a, b = got
    rule = cfg.privacy.card_identity if cfg is not None else None
    family = card_family(a, b, card)
    typer.echo(f"read A: {_what(a, family)}")
    typer.echo(f"read B: {_what(b, family)}")
    if family is None:
        raise _fail("neither reader says which card this is: give --card prox (125 kHz) or --card nfc (13.56 MHz)")
    if (fa := profile(a.technology, a.reader).family) and (fb := profile(b.technology, b.reader).family) \
            and fa != fb:
        typer.echo(f"DIFFERENT: read A is of a {FAMILY_NAMES[fa]}, read B of a {FAMILY_NAMES[fb]}: two cards "
                   "(or one reader's card_identity.family is wrong)")
        raise typer.Exit(code=DIFFERENT)
    where = f"the school's rule ({describe(rule)})" if cfg is not None else "no rule given (cards as read)"
    if same_card(a, b, rule, family):
        typer.echo(f"SAME CARD: one pseudonym at both readers under {where}")
        raise typer.Exit(code=SAME)
    typer.echo(f"DIFFERENT: two pseudonyms under {where}")
    found = fixes(a, b, rule, family)
    if not found:
        typer.echo("No rule makes these reads one card: they are two cards, or a reader does something unusual "
                   "(check its output mode with the vendor's tool; docs/drivers/cards.md)")
        raise typer.Exit(code=DIFFERENT)
    typer.echo("They would be one card with:")
    shown: set[tuple[str, ...]] = set()
    for fix in found:  # the best school-wide rule for each set of reader settings
        readers = tuple(c for c in fix.changes if " on the reader of " in c)
        if readers not in shown and len(shown) < 3:
            shown.add(readers)
            typer.echo(f"  - {_fix_text(fix, rule)}")
    if any(f.rule.prox_bits == 24 for f in found[:1]) and family == "prox":
        typer.echo("Note: 24 bits leave 16.7 million card numbers; among 2,000 random cards two share one with "
                   "a chance of about 11 % (docs/drivers/cards.md). Prefer 32 bits where every reader gives them.")
    typer.echo("A new rule gives cards new pseudonyms: see docs/privacy.md before changing it.")
    raise typer.Exit(code=DIFFERENT)
