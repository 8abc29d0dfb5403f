"""Attendance checks: heads above taps, one card in two rooms too quickly (simulator, rules, classifiers)."""
