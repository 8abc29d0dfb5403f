"""EduGate: the open-source edge gateway for smart schools."""

__version__ = "0.1.0"
