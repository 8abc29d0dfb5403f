"""Wiegand 26/34-bit card readers wired to the gateway's GPIO pins.

The reader's D0 and D1 lines (through level shifters or optocouplers: readers
run at 5-12 V, a Pi's pins take 3.3 V) go to two GPIO inputs; the kernel
timestamps every falling edge and the driver assembles them into frames
(:mod:`drivers.wiegand_codec`). Optional LED and beeper lines, driven by GPIO
outputs, show the outcome of a tap once its event is durable.

Layers, lowest first: an :class:`EdgeSource` yields timestamped edges (real:
:class:`GpiodEdgeSource`; tests: ``simulators.wiegand.FakeWiegandReader``);
:class:`~drivers.wiegand_codec.FrameAssembler` and
:func:`~drivers.wiegand_codec.decode` make cards of them; :class:`WiegandDriver`
owns reopening and feedback. Nothing here logs card bits or numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar, Literal, Protocol

from pydantic import Field, model_validator

from edugate.common.ratelimit import LogLimiter
from edugate.drivers.base import Backoff, Outage
from edugate.drivers.card_reader import CardRead, CardReaderConfig, CardReaderDriver, Outcome
from edugate.drivers.wiegand.codec import D0, D1, Edge, FrameAssembler, FrameResult, WiegandCard, WiegandError, decode
from edugate.drivers.wiegand.gpio import CONSUMER, GpiodOutput, GpioOutput, import_gpiod

log = logging.getLogger(__name__)

LineOffset = int


class WiegandConfig(CardReaderConfig):
    """A Wiegand 26/34-bit reader on two GPIO inputs, with optional LED and beeper outputs."""

    # old names, still read (issue 19)
    renamed: ClassVar[Mapping[str, str]] = {"backoff_max_s": "reopen_max_s"}

    driver: Literal["wiegand"]
    chip: str = Field("/dev/gpiochip0", pattern=r"^/dev/", description="The GPIO chip (gpiodetect lists them; "
                      "the 40-pin header is /dev/gpiochip0 on a Pi 4 and on a Pi 5 with a current kernel).")
    d0_line: LineOffset = Field(ge=0, le=1023, description="Line offset (on a Pi: the BCM GPIO number) of D0.")
    d1_line: LineOffset = Field(ge=0, le=1023, description="Line offset of D1.")
    led_line: LineOffset | None = Field(None, ge=0, le=1023, description="Output to the reader's LED input "
                                        "(optional).")
    beeper_line: LineOffset | None = Field(None, ge=0, le=1023, description="Output to the reader's beeper input "
                                           "(optional).")
    feedback_active_low: bool = Field(False, description="True if the driver circuit inverts: the GPIO must go "
                                      "low to light the LED or sound the beeper (default: high = on, through an "
                                      "NPN transistor pulling the reader's input low).")
    formats: list[Literal[26, 34]] = Field([26, 34], min_length=1, description="Frame lengths this reader sends.")
    frame_gap_ms: float = Field(25.0, ge=2, le=500, description="Quiet time that ends a frame.")
    check_pulse_width: bool = Field(False, description="Also watch rising edges and reject pulses outside "
                                    "10-500 µs (catches noise; doubles the interrupts).")
    reopen_max_s: float = Field(10.0, ge=0.01, le=3600, description="Longest wait between attempts to reopen "
                                 "the GPIO chip.")

    @model_validator(mode="after")
    def _distinct_lines(self) -> WiegandConfig:
        seen: dict[int, str] = {}
        for name in ("d0_line", "d1_line", "led_line", "beeper_line"):
            line = getattr(self, name)
            if line is None:
                continue
            if line in seen:
                raise ValueError(f"{name} and {seen[line]} are both line {line}")
            seen[line] = name
        return self

    @property
    def output_lines(self) -> list[LineOffset]:
        return [line for line in (self.led_line, self.beeper_line) if line is not None]


# ---------------------------------------------------------------- the lowest layer: edges and outputs


class EdgeSource(Protocol):
    """Timestamped edges on D0/D1 (``Edge.line`` 0/1, monotonic ns). OSError when the chip goes away."""

    async def read(self) -> list[Edge]:
        """Wait for at least one edge; return every edge buffered so far, oldest first."""
        ...

    def read_ready(self) -> list[Edge]:
        """The edges buffered right now, without waiting (possibly none)."""
        ...

    def close(self) -> None: ...


EdgeSourceFactory = Callable[[WiegandConfig], EdgeSource]
OutputFactory = Callable[[WiegandConfig], GpioOutput]


class GpiodEdgeSource:
    """D0/D1 edges from the kernel through libgpiod v2, timestamped by the kernel (CLOCK_MONOTONIC)."""

    EVENT_BUFFER = 256  # a 34-bit frame with both edges is 68 events; room for a busy event loop

    def __init__(self, chip: str, d0: LineOffset, d1: LineOffset, *, both_edges: bool = False) -> None:
        gpiod = import_gpiod()
        from gpiod.line import Bias, Direction  # gpiod is optional
        from gpiod.line import Edge as GpiodEdge

        settings = gpiod.LineSettings(direction=Direction.INPUT, bias=Bias.PULL_UP,
                                      edge_detection=GpiodEdge.BOTH if both_edges else GpiodEdge.FALLING)
        self._request = gpiod.request_lines(chip, consumer=CONSUMER, config={(d0, d1): settings},
                                            event_buffer_size=self.EVENT_BUFFER)
        self._lines = {d0: D0, d1: D1}
        self._falling = gpiod.EdgeEvent.Type.FALLING_EDGE

    @classmethod
    def for_config(cls, cfg: WiegandConfig) -> GpiodEdgeSource:
        return cls(cfg.chip, cfg.d0_line, cfg.d1_line, both_edges=cfg.check_pulse_width)

    def read_ready(self) -> list[Edge]:
        if not self._request.wait_edge_events(0):
            return []
        return [Edge(self._lines[e.line_offset], e.timestamp_ns, e.event_type == self._falling)
                for e in self._request.read_edge_events()]

    async def read(self) -> list[Edge]:
        loop = asyncio.get_running_loop()
        fd = self._request.fd
        while not (edges := self.read_ready()):
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        return edges

    def close(self) -> None:
        self._request.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def gpiod_outputs(cfg: WiegandConfig) -> GpioOutput:
    return GpiodOutput(cfg.chip, cfg.output_lines, active_low=cfg.feedback_active_low)


# ---------------------------------------------------------------- feedback patterns

Step = tuple[bool, bool, float]
"""(LED on, beeper on, hold for seconds)."""

PATTERNS: dict[Outcome, tuple[Step, ...]] = {
    "accepted": ((True, True, 0.10), (True, False, 0.40), (False, False, 0.0)),
    "allow": ((True, True, 0.10), (True, False, 0.40), (False, False, 0.0)),
    "deny": ((False, True, 0.08), (False, False, 0.08), (False, True, 0.08), (False, False, 0.08),
             (False, True, 0.08), (False, False, 0.0)),
    "error": ((False, True, 0.60), (False, False, 0.0)),
}
"""What a student sees and hears: accepted/allow = LED 0.5 s + one short beep; deny = three short beeps;
error = one long beep. The first step is set at once; the rest runs in the background."""


# ---------------------------------------------------------------- the driver


class WiegandDriver(CardReaderDriver[WiegandConfig]):
    """Reads Wiegand 26/34 cards from GPIO edges and shows the outcome on the reader's LED and beeper.

    ``edge_source_factory`` and ``output_factory`` replace libgpiod in tests.
    """

    config_model = WiegandConfig

    def __init__(self, config: WiegandConfig, *, edge_source_factory: EdgeSourceFactory | None = None,
                 output_factory: OutputFactory | None = None) -> None:
        super().__init__(config)
        self._edge_factory = edge_source_factory or GpiodEdgeSource.for_config
        self._output_factory = output_factory or gpiod_outputs
        self._source: EdgeSource | None = None
        self._outputs: GpioOutput | None = None
        self._pattern: asyncio.Task[None] | None = None
        self.outage = Outage(self.health, log, config.id, health_text="{message}",
                             down_text="{where}: Wiegand reader offline: {message} (retrying)",
                             up_text="{where}: Wiegand reader on {on} is back after {down:.1f} s",
                             counter="disconnects")
        self._limiter = LogLimiter(burst=1, window_s=1.0)  # a loose wire: one warning a second, with a count

    # ------------------------------------------------------------ reading

    async def reads(self) -> AsyncIterator[CardRead]:
        cfg = self.config
        backoff = Backoff(first=min(0.5, cfg.reopen_max_s), cap=cfg.reopen_max_s)
        where = f"{cfg.chip} lines {cfg.d0_line}/{cfg.d1_line}"
        while True:
            try:
                self._source = self._edge_factory(cfg)
            except (OSError, ImportError) as exc:
                self._lost(f"cannot open {where}: {_reason(exc)}")
                await backoff.sleep()
                continue
            self._back(where)
            backoff.reset()
            try:
                async for read in self._reads_from(self._source):
                    yield read
            except OSError as exc:
                self._lost(f"lost {where}: {_reason(exc)}")
            finally:
                self._close_source()
            await backoff.sleep()

    async def _reads_from(self, source: EdgeSource) -> AsyncIterator[CardRead]:
        assembler = FrameAssembler(gap_ns=int(self.config.frame_gap_ms * 1_000_000))
        while True:
            deadline = assembler.deadline_ns
            if deadline is None:
                edges = await source.read()
            else:
                try:
                    async with asyncio.timeout(max(0.0, (deadline - time.monotonic_ns()) / 1e9) + 0.001):
                        edges = await source.read()
                except TimeoutError:
                    edges = source.read_ready()  # anything the kernel stamped before the deadline
            results: list[FrameResult] = []
            for edge in edges:
                results += assembler.feed(edge)
            results += assembler.flush(time.monotonic_ns())
            for result in results:
                card = self._decode(result)
                if card is not None:
                    yield CardRead(uid=card.uid, technology=f"wiegand{card.bits}")

    def _decode(self, result: FrameResult) -> WiegandCard | None:
        try:
            if isinstance(result, WiegandError):
                raise result
            return decode(result, self.config.formats)
        except WiegandError as exc:
            self.health.count("bad_frames")
            self.health.count(f"bad_frames.{exc.reason}")
            self.health.error(f"frame rejected: {exc}", offline=False)
            held = self._limiter.allow()
            if held is not None:
                more = f" ({held} more rejected frames not shown)" if held else ""
                log.warning("%s: Wiegand frame rejected: %s%s", self.device_id, exc, more)
            return None

    def _lost(self, what: str) -> None:
        self.outage.down(what)

    def _back(self, where: str) -> None:
        self.outage.up(on=where)

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            with contextlib.suppress(OSError):
                source.close()

    # ------------------------------------------------------------ feedback

    async def signal(self, outcome: Outcome) -> None:
        """Start the outcome's LED/beeper pattern: the first step at once, the rest in the background."""
        if not self.config.output_lines:
            return
        if self._pattern is not None:
            self._pattern.cancel()
            self._pattern = None
        try:
            if self._outputs is None:
                self._outputs = self._output_factory(self.config)
            steps = PATTERNS[outcome]
            self._apply(steps[0])
        except (OSError, ImportError) as exc:
            self._feedback_failed(outcome, exc)
            return
        if len(steps) > 1:
            self._pattern = asyncio.create_task(self._play(outcome, steps), name=f"{self.device_id}:feedback")

    async def _play(self, outcome: Outcome, steps: tuple[Step, ...]) -> None:
        try:
            for previous, step in itertools.pairwise(steps):
                await asyncio.sleep(previous[2])
                self._apply(step)
        except OSError as exc:
            self._feedback_failed(outcome, exc)

    def _apply(self, step: Step) -> None:
        led, beeper, _ = step
        assert self._outputs is not None
        if self.config.led_line is not None:
            self._outputs.set(self.config.led_line, led)
        if self.config.beeper_line is not None:
            self._outputs.set(self.config.beeper_line, beeper)

    def _feedback_failed(self, outcome: Outcome, exc: BaseException) -> None:
        self.health.count("feedback_errors")
        log.warning("%s: could not signal %s on the reader's LED/beeper lines: %s", self.device_id, outcome,
                    _reason(exc))
        self._close_outputs()  # reopen on the next tap

    def _close_outputs(self) -> None:
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            with contextlib.suppress(OSError):
                outputs.close()

    async def close(self) -> None:
        if self._pattern is not None:
            self._pattern.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pattern
            self._pattern = None
        if self._outputs is not None:
            with contextlib.suppress(OSError):
                self._apply((False, False, 0.0))
        self._close_outputs()
        self._close_source()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        hint = " (no permission: add the gateway's user to the 'gpio' group)" if exc.errno == 13 else ""
        return exc.strerror + hint
    return str(exc)
