"""The state document's ``card_rule``: which card identity rule this gateway pseudonymises under (issue 22).

Central compares it across the gateways of a school (``central/card_rules.py``); it holds the rule's version
and a fingerprint of its settings, never the school key or a card number.
"""

from __future__ import annotations

from edugate.common.card_identity import CardIdentityRule, rule_version
from edugate.contract.state import CardRuleEntry, card_rule_entry

NOT_IN_FINGERPRINT = frozenset({"version", "replaces"})
"""Rule fields that do not decide pseudonyms: the version is sent on its own, ``replaces`` is history."""


def state_card_rule(rule: CardIdentityRule | None) -> CardRuleEntry:
    """``card_rule`` for ``rule`` (None: no rule, version 0 and the fingerprint of ``{}``)."""
    settings = {} if rule is None else rule.model_dump(mode="json", exclude=set(NOT_IN_FINGERPRINT))
    return card_rule_entry(rule_version(rule), settings)
