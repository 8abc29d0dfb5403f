"""The health record's CPU figure covers its window, however often the status page asks too."""

from __future__ import annotations

import time

from edugate.gateway.runtime.cpu_meter import CpuMeter


class Process:
    """A process whose CPU time and clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 50.0

    def run(self, seconds: float, busy: float) -> None:
        self.now += seconds
        self.cpu += seconds * busy


def test_frequent_callers_do_not_shorten_the_window() -> None:
    proc = Process()
    meter = CpuMeter(window_s=30, cpu_seconds=lambda: proc.cpu, clock=lambda: proc.now)
    proc.run(20, busy=0.5)  # 50 % for 20 s ...
    for _ in range(5):  # ... then idle, with the status page asking every 2 s
        proc.run(2, busy=0.0)
        meter.percent()
    # the health loop, 30 s after the start: 10 CPU-seconds in 30 s (psutil's cpu_percent(None)
    # would say 0.0 here, the CPU since the page's last call)
    assert meter.percent() == 33.3


def test_the_window_slides_and_memory_stays_bounded() -> None:
    proc = Process()
    meter = CpuMeter(window_s=10, cpu_seconds=lambda: proc.cpu, clock=lambda: proc.now)
    proc.run(10, busy=1.0)
    assert meter.percent() == 100.0
    for _ in range(10_000):  # a busy caller, 10 ms apart, for 100 s of idle
        proc.run(0.01, busy=0.0)
        meter.percent()
    assert meter.percent() == 0.0
    assert len(meter._samples) <= 10 / 0.5 + 2


def test_the_real_process() -> None:
    meter = CpuMeter(window_s=5)
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of CPU
        pass
    assert meter.percent() > 20  # about 100 % of a core, less on a crowded machine
