# EduGate kit node: entry point, on a board (MicroPython) or on a computer (CPython, for tests and demos).
#
# On a micro:bit v2 or an ESP32, copy edulink.py, slots.py, kitnode.py and main.py to the board; main.py
# runs at boot and speaks the link at 115200 bit/s (micro:bit: on its USB serial line; ESP32: on UART1),
# reads the board's temperature (and light) sensors and drives its display/LED. Firmware updates over the
# link need the A/B slots of an ESP32; a micro:bit refuses them. Under CPython:
#   python -m edugate.firmware_bridge.node.main --tty /dev/pts/N --state DIR [--board B] [--interval-ms N]
# (or --fd N for a descriptor inherited from the parent), with simulated sensors.

import sys

try:
    import kitnode
except ImportError:
    from edugate.firmware_bridge.node import kitnode

MICROPYTHON = sys.implementation.name == "micropython"


def micropython_main():  # pragma: no cover - runs on a board
    import time

    import machine

    state = {"led": "off"}
    try:
        import microbit
    except ImportError:
        microbit = None

    if microbit is not None:
        # micro:bit v2: the link takes the USB serial line (uart.init detaches the REPL from it); readings from
        # the on-board temperature and light sensors; the "led" is the 5x5 display. No A/B updates: its runtime
        # is flashed over USB mass storage.
        uart = microbit.uart
        uart.init(baudrate=115200)
        board, state_dir = "microbit-v2", None

        def show(on):
            if on:
                microbit.display.show(microbit.Image.HEART)
            else:
                microbit.display.clear()

        sensors = [kitnode.Sensor("temperature", "°C", microbit.temperature),
                   kitnode.Sensor("light", "level", microbit.display.read_light_level)]
    else:
        # ESP32: the link on UART1 (GPIO17 TX, GPIO16 RX) to a USB-serial adapter or the gateway's UART, so the
        # USB REPL stays free; A/B slots on the littlefs file system under /fw.
        import esp32

        uart = machine.UART(1, baudrate=115200, tx=17, rx=16)
        board, state_dir = "esp32", "/fw"
        pin = machine.Pin(2, machine.Pin.OUT)

        def show(on):
            pin.value(1 if on else 0)

        sensors = [kitnode.Sensor("temperature", "°C", lambda: (esp32.raw_temperature() - 32) / 1.8)]

    def set_led(value):
        if value not in ("on", "off"):
            raise ValueError("led takes on or off, not " + value)
        show(value == "on")
        state["led"] = value
        return "led " + value

    ticks = {"last": time.ticks_ms(), "total": 0}

    def clock_ms():  # ticks_ms wraps; this does not
        now = time.ticks_ms()
        ticks["total"] += time.ticks_diff(now, ticks["last"])
        ticks["last"] = now
        return ticks["total"]

    node = kitnode.KitNode(node_id=board + "-" + kitnode.slots_mod._hex(machine.unique_id()), board=board,
                           sensors=sensors, actuators=[kitnode.Actuator("led", set_led)], write=uart.write,
                           clock_ms=clock_ms, state_dir=state_dir, max_payload=512, slot_capacity=256 * 1024)
    while True:
        n = uart.any()
        if n:
            data = uart.read(n)
            if data:
                node.receive(data)
        node.tick()
        time.sleep_ms(5)


def cpython_main(argv):
    import argparse
    import math
    import os
    import select
    import termios
    import time
    import tty

    p = argparse.ArgumentParser(description="EduGate reference kit node on a serial line (CPython).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tty", help="serial device or pty to open")
    where.add_argument("--fd", type=int, help="an open descriptor of the line, inherited")
    p.add_argument("--state", required=True, help="directory for the firmware slots (created if missing)")
    p.add_argument("--node-id", default="sim-kit-1")
    p.add_argument("--board", default="microbit-v2")
    p.add_argument("--firmware", default="1.0.0", help="version in slot A on first boot")
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--max-payload", type=int, default=512)
    p.add_argument("--protocol-version", type=int, default=1, help="protocol version to announce (tests)")
    p.add_argument("--pubkey", help="central's Ed25519 public key (PEM) to verify manifests with")
    args = p.parse_args(argv)

    fd = args.fd if args.fd is not None else os.open(args.tty, os.O_RDWR | os.O_NOCTTY)
    if os.isatty(fd):
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    start = time.monotonic()
    state = {"led": "off"}

    def clock_ms():
        return int((time.monotonic() - start) * 1000)

    def write(data):
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
                continue
            view = view[n:]

    def set_led(value):
        if value not in ("on", "off"):
            raise ValueError("led takes on or off, not " + value)
        state["led"] = value
        return "led " + value

    verify = None
    if args.pubkey:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        with open(args.pubkey, "rb") as f:
            key = load_pem_public_key(f.read())

        def verify(manifest, signature):
            try:
                key.verify(signature, manifest)
                return True
            except InvalidSignature:
                return False

    sensors = [
        kitnode.Sensor("temperature", "°C", lambda: round(21.0 + 2.0 * math.sin(clock_ms() / 60000.0), 2)),
        kitnode.Sensor("light", "lx", lambda: float(300 + clock_ms() // 1000 % 50)),
    ]
    node = kitnode.KitNode(node_id=args.node_id, board=args.board, sensors=sensors,
                           actuators=[kitnode.Actuator("led", set_led)], write=write, clock_ms=clock_ms,
                           state_dir=args.state, factory_version=args.firmware, interval_ms=args.interval_ms,
                           max_payload=args.max_payload, verify=verify, version=args.protocol_version)
    while True:
        ready, _, _ = select.select([fd], [], [], 0.02)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the other end hung up (EIO on a pty): wait for it to come back
                time.sleep(0.05)
                continue
            if not data:
                time.sleep(0.05)
                continue
            node.receive(data)
        node.tick()


if __name__ == "__main__":
    if MICROPYTHON:
        micropython_main()
    else:
        cpython_main(sys.argv[1:])
