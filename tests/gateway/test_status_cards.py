"""The status page's cards built from a status document (``gateway/web/views.py``, the panels): what they say
when a service has a panel of its own, and what the equipment panel says of the energy rule."""

from __future__ import annotations

from edugate.gateway.web.views import status_view

TZ_NAME = "Asia/Ho_Chi_Minh"


def test_the_services_card_does_not_say_none_when_a_service_has_its_own_panel() -> None:
    from edugate.common.web.site import site_templates
    from edugate.gateway.web.app import TEMPLATES

    tpl = site_templates([TEMPLATES]).get_template("_status.html")

    def services_card(services: dict) -> str:
        html = tpl.render(s=status_view({"services": services}, TZ_NAME))
        return " ".join(html[html.index('id="services"'):].split())

    alerts = {"active": [], "rules": 5, "raised": 0}
    card = services_card({"alerts": alerts})
    assert "No other service" in card and "alerts has its own panel" in card, card
    assert "No service (access control" in services_card({})
    assert "<h3>access</h3>" in services_card({"access": {"allowed": 3}, "alerts": alerts})


def test_the_equipment_panel_says_what_the_energy_rule_does() -> None:
    from edugate.gateway.web.equipment_panel import equipment_view

    rule = {"days": ["mon", "tue"], "start": "07:00", "end": "17:00", "grace_min": 15}
    plain = equipment_view({"energy": rule}, TZ_NAME).energy
    assert plain == "on outside school hours 07:00-17:00 mon,tue (15 min grace) raises an event"
    full = equipment_view({"energy": rule | {"empty_min": 20, "switch_off": True}}, TZ_NAME).energy
    assert "or 20 min in an empty room" in full and "switched off (the school's opt-in)" in full
    assert equipment_view({"energy": "junk"}, TZ_NAME).energy == ""
