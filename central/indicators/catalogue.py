"""The metrics catalogue in code: every indicator once, with its unit, source and how missing data is treated.

``docs/metrics.md`` says the same for people; ``tests/central/indicators`` checks the two name the same
indicators. An indicator is computed from *components* (raw sums per school) so that a district's or the city's
value is computed from the summed components of its schools, never by averaging rounded school values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["count", "percent", "median_minutes"]


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    unit: str
    kind: Kind
    source: str
    missing: str
    personal: bool
    """Counts of children's actions: subject to the k-anonymity rule (suppressed below k, rounded above)."""
    numerator: str
    denominator: str | None = None


STORE_QUERIES: dict[str, str] = {
    # component -> PromQL (VictoriaMetrics), summed per school over the period's window ``{w}`` (seconds)
    "taps": 'sum by (school) (sum_over_time(edugate_event_count{{type="card_tap",role=~"attendance|lab"}}[{w}s]))',
    "present": 'sum by (school) (sum_over_time(edugate_event_present{{type="attendance_summary"}}[{w}s]))',
    "visitors": "sum by (school) (sum_over_time(edugate_visitors_in[{w}s]))",
    "loans": 'sum by (school) (sum_over_time(edugate_event_count{{type="library_loan"}}[{w}s]))',
    "alarms": 'sum by (school) (sum_over_time(edugate_event_count{{type="gate_alarm"}}[{w}s]))',
    "health_records": 'sum by (school) (count_over_time(edugate_uptime_s{{device="_gateway"}}[{w}s]))',
    "gateways": 'count by (school) (max by (school, gateway) '
                '(count_over_time({{__name__=~"edugate_gateway_online|edugate_uptime_s"}}[{w}s])))',
    "online_states": "sum by (school) (sum_over_time(edugate_gateway_online[{w}s]))",
    "devices_online": 'sum by (school) (sum_over_time(edugate_devices_online{{device="_gateway"}}[{w}s]))',
    "devices_offline": 'sum by (school) (sum_over_time(edugate_devices_offline{{device="_gateway"}}[{w}s]))',
}
ROOM_QUERIES: dict[str, str] = {
    # component -> PromQL per (school, room), for presence rates: only rooms central.yaml api.expected_students lists
    "room_present": 'sum by (school, room) (sum_over_time(edugate_event_present{{type="attendance_summary"}}[{w}s]))',
    "room_periods": 'sum by (school, room) (count_over_time(edugate_event_present{{type="attendance_summary"}}'
                    '[{w}s]))',
}
"""``present_known`` (present in the listed rooms) and ``expected_present`` (each listed room's summaries x its
expected students) are made from these."""
EVENT_COMPONENTS = ("alerts_raised", "alerts_cleared", "assets_on_record", "assets_in_use", "power_on_hours",
                    "lab_sessions")
"""From the event store (``alert`` events); ``clear_minutes`` (a list per school) is kept apart for medians."""
DERIVED = ("expected_health_records",)
"""gateways x (window / health interval): what a school's gateways would have sent running the whole period."""

_NO_DATA = ("no_data when none of the school's gateways sent anything in the period (no health record, no state); "
            "otherwise a missing series counts as 0 (nothing of the kind was recorded)")

_EVENTS = "0 when the event store holds none for the school; no_data without an event store"

CATALOGUE: tuple[Indicator, ...] = (
    Indicator("attendance_taps", "Attendance taps", "taps", "count",
              "store: edugate_event_count{type=card_tap, role=attendance|lab}", _NO_DATA, True, "taps"),
    Indicator("attendance_present", "Student-periods present", "student-periods", "count",
              "store: edugate_event_present{type=attendance_summary} (one summary per room and timetable period)",
              _NO_DATA, True, "present"),
    Indicator("library_visitors", "Library visitors", "visits", "count",
              "store: edugate_visitors_in (gate people counters)", _NO_DATA, True, "visitors"),
    Indicator("library_loans", "Library loans", "loans", "count",
              "store: edugate_event_count{type=library_loan}", _NO_DATA, True, "loans"),
    Indicator("library_alarms", "Library gate alarms", "alarms", "count",
              "store: edugate_event_count{type=gate_alarm}", _NO_DATA, True, "alarms"),
    Indicator("alerts_raised", "Alerts raised", "alerts", "count",
              "event store: alert events with state raised, stamped in the period",
              "0 when the event store holds none; no_data without an event store", False, "alerts_raised"),
    Indicator("alert_clear_minutes", "Median time to clear an alert", "minutes", "median_minutes",
              "event store: from each alert raised in the period to the next cleared event of the same gateway, "
              "device and rule", "no_data when no alert raised in the period has cleared yet (still raised "
              "alerts are left out, counted in alerts_raised)", False, "clear_minutes"),
    Indicator("equipment_on_record", "Equipment on digital records", "assets", "count",
              "event store: distinct assets of the gateways' asset registries (asset events) stamped before the "
              "period's end", _EVENTS, False, "assets_on_record"),
    Indicator("equipment_in_use", "Equipment in use", "assets", "count",
              "event store: distinct assets with power-on time on a day of the period (asset_usage events)",
              _EVENTS, False, "assets_in_use"),
    Indicator("equipment_power_on_hours", "Board and projector hours", "hours", "count",
              "event store: power_on_h of the last asset_usage event of each asset and day of the period",
              _EVENTS, False, "power_on_hours"),
    Indicator("lab_sessions", "Lab sessions", "sessions", "count",
              "event store: distinct experiment sessions started in the period (session events, action started)",
              _EVENTS, False, "lab_sessions"),
    Indicator("presence_rate_pct", "Presence rate", "%", "percent",
              "store: edugate_event_present{type=attendance_summary} of the rooms central.yaml "
              "api.expected_students lists / (their summaries x the students expected in each)",
              "no_data when no summary of a listed room arrived; the numerator is the rounded count "
              "(suppressed below k: then the rate is too)", True, "present_known", "expected_present"),
    Indicator("gateway_online_pct", "Gateways online", "%", "percent",
              "store: edugate_gateway_online (state refreshed every health interval while connected)",
              _NO_DATA + "; capped at 100", False, "online_states", "expected_health_records"),
    Indicator("device_online_pct", "Devices online", "%", "percent",
              "store: edugate_devices_online / (online + offline) of the gateways' health records",
              "no_data when no health record arrived", False, "devices_online", "devices_total"),
    Indicator("data_completeness_pct", "Data completeness", "%", "percent",
              "store: health records stamped in the period / (gateways x period / health interval)",
              _NO_DATA + "; capped at 100", False, "health_records", "expected_health_records"),
)
BY_NAME = {indicator.name: indicator for indicator in CATALOGUE}
