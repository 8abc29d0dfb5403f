"""Does every gateway of a school pseudonymise cards under one card identity rule? (issue 22)

Each gateway reports its rule's version and fingerprint in its retained state (``card_rule``, kept in the
fleet table). Two gateways of one school under different rules give one card two pseudonyms: a tap at one and
a tap at the other never meet, an allow-list made for one refuses the card at the other. Central's fleet page
and ``edugate central-doctor`` show what :func:`rule_mismatches` finds. Gateways that do not report a rule
(from before the field) are not compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RuleMismatch:
    """A school whose gateways report different card identity rules."""

    school: str
    rules: tuple[tuple[str, tuple[str, ...]], ...]  # (rule as "version N (fingerprint)", its gateways), sorted

    @property
    def gateways(self) -> tuple[str, ...]:
        return tuple(sorted(g for _, gws in self.rules for g in gws))

    @property
    def message(self) -> str:
        where = "; ".join(f"{rule} on {', '.join(gws)}" for rule, gws in self.rules)
        return (f"school {self.school}: its gateways use different card identity rules ({where}): one card gets "
                "a different pseudonym at each; put the same privacy.card_identity on every gateway of the school "
                "(docs/drivers/cards.md)")


def describe_rule(rule: Mapping[str, Any]) -> str:
    return f"version {rule.get('version')} ({rule.get('fingerprint')})"


def rule_mismatches(rows: Iterable[Mapping[str, Any]]) -> list[RuleMismatch]:
    """The schools among the fleet table's ``rows`` (``FleetTable.snapshot()``) whose gateways report more than
    one card rule, by school."""
    by_school: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        rule = row.get("card_rule")
        if rule is None:
            continue
        by_school.setdefault(str(row["school"]), {}).setdefault(describe_rule(rule), []).append(str(row["gateway"]))
    return [RuleMismatch(school, tuple((rule, tuple(sorted(gws))) for rule, gws in sorted(rules.items())))
            for school, rules in sorted(by_school.items()) if len(rules) > 1]
