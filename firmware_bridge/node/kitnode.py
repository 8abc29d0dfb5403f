# EduGate kit node: the reference firmware's logic, with no I/O of its own.
#
# MicroPython-compatible; runs unchanged under CPython, where the tests drive it over a pseudo-terminal.
# The board glue (main.py) feeds received bytes to receive(), calls tick() often, and gives a
# write(bytes) function, a clock in milliseconds, and the board's sensors and actuators.

try:
    import json
except ImportError:  # a micro:bit: no json, and no firmware updates over the link (its FixedImage refuses them)
    json = None

try:
    import edulink as L
    import slots as slots_mod
except ImportError:  # CPython, installed as a package
    from edugate.firmware_bridge.node import edulink as L
    from edugate.firmware_bridge.node import slots as slots_mod

HELLO_RETRY_MS = 1000
REFUSED_RETRY_MS = 10000
BAD_FRAME_LOG_MS = 5000
LEVEL_INFO = 20
LEVEL_WARNING = 30
LEVEL_ERROR = 40


class Sensor:
    def __init__(self, name, unit, read):
        self.name = name
        self.unit = unit
        self.read = read  # () -> float


class Actuator:
    def __init__(self, name, apply):
        self.name = name
        self.apply = apply  # (value text) -> detail text; raises ValueError on a bad value


class KitNode:
    def __init__(self, node_id, board, sensors, actuators, write, clock_ms, state_dir,
                 factory_version="1.0.0", interval_ms=1000, max_payload=512, slot_capacity=1048576,
                 verify=None, version=L.PROTOCOL_VERSION):
        self.node_id = node_id
        self.board = board
        self.sensors = sensors
        self.actuators = actuators
        self.write = write
        self.clock_ms = clock_ms
        self.interval_ms = interval_ms
        self.max_payload = max_payload
        self.verify = verify  # (manifest bytes, signature bytes) -> bool, or None when the board cannot
        self.version = version  # protocol version of the frames this node sends
        if state_dir is None:
            self.slots = slots_mod.FixedImage(factory_version)
        else:
            self.slots = slots_mod.Slots(state_dir, factory_version, slot_capacity)
        self.splitter = L.Splitter()
        self.counters = {"bad_frames": 0, "readings_sent": 0, "readings_acked": 0, "commands": 0, "boots": 0}
        self.boot()

    # ------------------------------------------------------------ state

    def boot(self):
        """Start (or restart after a firmware switch): announce ourselves until the gateway accepts."""
        self.counters["boots"] += 1
        self.seq = 0
        self.linked = False
        self.refused = False
        self.hello_seqs = []  # HELLOs sent since boot and not yet answered: an ACK of any of them links us
        self.last_hello_ms = None
        self.last_reading_ms = None
        self.last_bad_log_ms = None
        self.bad_since_log = 0
        self.fw = None  # the manifest (dict) of the transfer under way
        self.send_hello()

    def send(self, msg_type, payload):
        seq = self.seq
        self.seq = self.seq + 1 if self.seq < 0xFFFF else 1  # seq 0 only for the first frame after boot
        self.write(L.encode_frame(msg_type, seq, payload, self.version))
        return seq

    def send_hello(self):
        caps = [(L.SENSOR, s.name, s.unit) for s in self.sensors] + [(L.ACTUATOR, a.name, "") for a in self.actuators]
        if len(self.hello_seqs) >= 16:
            self.hello_seqs.pop(0)
        payload = L.pack_hello(self.node_id, self.board, self.slots.version, self.max_payload, self.slots.active,
                               caps)
        self.hello_seqs.append(self.send(L.HELLO, payload))
        self.last_hello_ms = self.clock_ms()

    def log(self, level, text):
        self.send(L.LOG, L.pack_log(level, text))

    # ------------------------------------------------------------ time

    def tick(self):
        now = self.clock_ms()
        if not self.linked:
            wait = REFUSED_RETRY_MS if self.refused else HELLO_RETRY_MS
            if now - self.last_hello_ms >= wait:
                self.send_hello()
            return
        if self.last_reading_ms is None or now - self.last_reading_ms >= self.interval_ms:
            self.last_reading_ms = now
            values = []
            for i in range(len(self.sensors)):
                try:
                    values.append((i, float(self.sensors[i].read())))
                except Exception as exc:  # a sensor that fails is reported, the others still are
                    self.log(LEVEL_WARNING, "sensor " + self.sensors[i].name + " failed: " + str(exc))
            if values:
                self.send(L.READINGS, L.pack_readings(now, values))
                self.counters["readings_sent"] += 1
        if self.bad_since_log and (self.last_bad_log_ms is None or now - self.last_bad_log_ms >= BAD_FRAME_LOG_MS):
            self.log(LEVEL_WARNING, str(self.bad_since_log) + " bad frames received (noise on the line?)")
            self.bad_since_log = 0
            self.last_bad_log_ms = now

    # ------------------------------------------------------------ frames in

    def receive(self, data):
        for item in self.splitter.feed(data):
            if isinstance(item, L.LinkError):
                self.counters["bad_frames"] += 1
                self.bad_since_log += 1
                continue
            version, msg_type, seq, payload = item
            if version != L.PROTOCOL_VERSION:
                self.send(L.NACK, L.pack_nack(seq, L.UNSUPPORTED_VERSION, "node speaks protocol version 1"))
                continue
            try:
                self.handle(msg_type, seq, payload)
            except L.LinkError as exc:
                self.send(L.NACK, L.pack_nack(seq, L.BAD_PAYLOAD, exc.args[1]))

    def handle(self, msg_type, seq, payload):
        if msg_type == L.HELLO_REQUEST:
            versions = L.unpack_hello_request(payload)
            if L.PROTOCOL_VERSION not in versions:
                self.refused = True
            self.send_hello()
        elif msg_type == L.ACK:
            acked, _detail = L.unpack_ack(payload)
            if acked in self.hello_seqs:
                self.linked = True
                self.refused = False
                self.hello_seqs = []
            else:
                self.counters["readings_acked"] += 1
        elif msg_type == L.NACK:
            nacked, _reason, _detail = L.unpack_nack(payload)
            if nacked in self.hello_seqs:
                self.linked = False
                self.refused = True
        elif not self.linked:
            self.send(L.NACK, L.pack_nack(seq, L.NOT_READY, "node has not been accepted yet (no ACK of its HELLO)"))
        elif msg_type == L.COMMAND:
            self.command(seq, payload)
        elif msg_type == L.FW_BEGIN:
            self.fw_begin(seq, payload)
        elif msg_type == L.FW_CHUNK:
            self.fw_chunk(seq, payload)
        elif msg_type == L.FW_COMMIT:
            self.fw_commit(seq, payload)
        else:
            self.send(L.NACK, L.pack_nack(seq, L.UNKNOWN_TYPE, "unknown message type " + str(msg_type)))

    def command(self, seq, payload):
        name, value = L.unpack_command(payload)
        self.counters["commands"] += 1
        for a in self.actuators:
            if a.name == name:
                try:
                    detail = a.apply(value)
                except ValueError as exc:
                    self.send(L.NACK, L.pack_nack(seq, L.BAD_VALUE, str(exc)))
                    return
                self.send(L.ACK, L.pack_ack(seq, detail or ""))
                return
        names = ", ".join(a.name for a in self.actuators) or "none"
        self.send(L.NACK, L.pack_nack(seq, L.UNKNOWN_ACTUATOR, "no actuator '" + name + "' (this node has: "
                                      + names + ")"))

    # ------------------------------------------------------------ firmware update

    def refuse(self, seq, reason, detail):
        self.send(L.NACK, L.pack_nack(seq, reason, detail))
        return None

    def check_manifest(self, seq, manifest_bytes, signature):
        """The manifest as a dict if this node may install it, else NACK and None."""
        try:
            m = json.loads(manifest_bytes.decode("utf-8"))
            board, version, size, sha = m["board"], m["version"], m["size"], m["sha256"]
            allow_downgrade = m.get("allow_downgrade", False) is True
        except Exception:
            return self.refuse(seq, L.FW_BAD_MANIFEST, "manifest is not the expected JSON object")
        new_v, cur_v = slots_mod.parse_version(str(version)), slots_mod.parse_version(self.slots.version)
        if new_v is None or not isinstance(size, int) or not isinstance(sha, str) or len(sha) != 64:
            return self.refuse(seq, L.FW_BAD_MANIFEST, "manifest has a bad version, size or sha256")
        if self.verify is not None and not self.verify(manifest_bytes, signature):
            return self.refuse(seq, L.FW_BAD_SIGNATURE, "manifest signature does not verify")
        if board != self.board:
            return self.refuse(seq, L.FW_WRONG_BOARD, "image is for board " + str(board) + ", this is " + self.board)
        if cur_v is not None and new_v <= cur_v and not allow_downgrade:
            return self.refuse(seq, L.FW_DOWNGRADE, "image version " + version + " is not newer than running "
                               + self.slots.version + " (the manifest does not allow a downgrade)")
        if size > self.slots.capacity or size <= 0:
            return self.refuse(seq, L.FW_TOO_LARGE, "image of " + str(size) + " bytes does not fit a slot of "
                               + str(self.slots.capacity))
        return m

    def fw_begin(self, seq, payload):
        manifest_bytes, signature = L.unpack_fw_begin(payload)
        if self.slots.capacity == 0:
            self.refuse(seq, L.FW_IO_ERROR, "this board has no firmware slots: it is updated over USB")
            return
        m = self.check_manifest(seq, manifest_bytes, signature)
        if m is None:
            return
        try:
            offset = self.slots.begin(manifest_bytes.decode("utf-8"), slots_mod._hex(signature), m["size"])
        except OSError as exc:
            self.refuse(seq, L.FW_IO_ERROR, "cannot prepare the inactive slot: " + str(exc))
            return
        self.fw = m
        self.send(L.FW_STATUS, L.pack_fw_status(seq, offset))

    def fw_chunk(self, seq, payload):
        offset, data = L.unpack_fw_chunk(payload)
        if self.fw is None:
            self.refuse(seq, L.FW_NO_TRANSFER, "no transfer under way: send FW_BEGIN first")
            return
        have = self.slots.received()
        if offset != have:
            self.send(L.FW_STATUS, L.pack_fw_status(seq, have))  # resynchronise: send from where I am
            return
        if offset + len(data) > self.fw["size"]:
            self.refuse(seq, L.FW_TOO_LARGE, "chunk ends at " + str(offset + len(data)) + ", past the image size "
                        + str(self.fw["size"]))
            return
        try:
            have = self.slots.write(data)
        except OSError as exc:
            self.refuse(seq, L.FW_IO_ERROR, "cannot write the inactive slot: " + str(exc))
            return
        self.send(L.FW_STATUS, L.pack_fw_status(seq, have))

    def fw_commit(self, seq, payload):
        sha = slots_mod._hex(L.unpack_fw_commit(payload))
        m = self.fw
        if m is None:
            self.refuse(seq, L.FW_NO_TRANSFER, "no transfer under way: send FW_BEGIN first")
            return
        have = self.slots.received()
        if have != m["size"]:
            self.refuse(seq, L.FW_INCOMPLETE, "have " + str(have) + " of " + str(m["size"]) + " bytes")
            return
        if sha != m["sha256"] or self.slots.sha256() != m["sha256"]:
            self.slots.abort()
            self.fw = None
            self.refuse(seq, L.FW_BAD_HASH, "image SHA-256 does not match the manifest; transfer discarded")
            return
        self.slots.switch(m["version"])
        self.send(L.ACK, L.pack_ack(seq, "switched to " + m["version"] + " in slot " + str(self.slots.active)))
        self.boot()  # a real board resets here and boots the new slot
