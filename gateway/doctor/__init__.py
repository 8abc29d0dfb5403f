"""``edugate doctor CONFIG``: diagnose a gateway. Each check gives a verdict (ok, warn, fail), what it found and,
when it is not ok, a fix in plain words. The exit code is the worst verdict (0 ok, 1 warn, 2 fail); ``--json``
prints the same for central. See :mod:`edugate.gateway.doctor.checks` and docs/operators.md ("Diagnose")."""

from edugate.gateway.doctor.checks import Account, DoctorOptions, Result, Verdict, run_doctor

__all__ = ["Account", "DoctorOptions", "Result", "Verdict", "run_doctor"]
