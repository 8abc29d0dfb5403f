"""``edugate pseudonym``: the controlled way back from pseudonyms to students.

Whoever holds the school key can compute the pseudonym of any card UID. Given
a roster (student id, card UID), this prints each student's pseudonym, so the
school can find who a pseudonym in an alert is. Every use is appended to an
audit log next to the key (who, when, why, how many), and the UIDs themselves
are never written anywhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer

from edugate.common.privacy import KeyFileError, Pseudonymizer, card_pseudonym, load_or_create_key, recorded_rule


def pseudonym(
    key: Annotated[Path, typer.Option(help="The school key file (privacy.secret_file of the gateway config).")],
    purpose: Annotated[str, typer.Option(help="Why (written to the audit log), e.g. 'bus alert 2026-11-23'.")],
    uid: Annotated[list[str] | None, typer.Argument(help="Card UIDs in hex (04:A2:2B:1C); under a card identity "
                                                    "rule KIND:VALUE (em4100:0A1B2C3D4E).")] = None,
    roster: Annotated[Path | None, typer.Option(help="CSV with columns student_id,uid (header row).")] = None,
    audit_log: Annotated[Path | None, typer.Option(help="Default: reidentification.log next to the key.")] = None,
) -> None:
    """Print the pseudonyms of card UIDs (or of a roster) under the school key; every use is audited."""
    if not key.exists():
        typer.echo(f"{key}: no such key file (refusing to create a new key here)", err=True)
        raise typer.Exit(code=2)
    try:
        p = Pseudonymizer(load_or_create_key(key), recorded_rule(key))  # the card rule recorded next to the key
    except KeyFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    rows: list[tuple[str, str]] = []
    try:
        if roster is not None:
            with roster.open(newline="") as fh:
                for line, row in enumerate(csv.DictReader(fh), start=2):
                    if not row.get("student_id") or not row.get("uid"):
                        raise ValueError(f"{roster}:{line}: needs student_id and uid")
                    try:
                        rows.append((row["student_id"], card_pseudonym(p, row["uid"])))
                    except ValueError as exc:
                        raise ValueError(f"{roster}:{line}: {exc}") from None
        for i, text in enumerate(uid or []):
            rows.append((f"uid[{i}]", card_pseudonym(p, text)))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    if not rows:
        typer.echo("give card UIDs or --roster", err=True)
        raise typer.Exit(code=2)
    audit = audit_log or key.parent / "reidentification.log"
    with audit.open("a") as fh:
        fh.write(f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\tuser={getpass.getuser()}\t"
                 f"key={p.key_id}\tcount={len(rows)}\tpurpose={purpose!r}\n")
    writer = csv.writer(sys.stdout)
    writer.writerow(["student_id", "pseudonym"])
    writer.writerows(rows)
