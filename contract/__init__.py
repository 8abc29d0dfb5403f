"""EduGate: the open-source edge gateway for smart schools. The wire contract every side imports."""

__version__ = "0.1.0"
