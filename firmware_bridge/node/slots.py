# EduGate kit node: two firmware slots (A/B) as files, switched only after a whole image verifies.
#
# MicroPython-compatible (os, json, hashlib only). On a board, the slot files stand in for the two OTA
# partitions (on an ESP32, esp32.Partition.get_next_update() / set_boot() do the same job). Files:
#   boot.json     {"active": 0 or 1, "versions": [version in slot 0, version in slot 1]}
#   slot0.bin     image in slot 0 (A)
#   slot1.bin     image in slot 1 (B)
#   pending.json  the transfer under way into the inactive slot: {"slot", "manifest" (text), "signature" (hex)}
# The received length of a transfer is the size of its slot file, so a transfer resumes where the file ends.
# Every JSON file is replaced by writing a temporary file and renaming it over the old one (atomic).

import os

try:
    import json
except ImportError:  # a micro:bit has no json (nor hashlib): it has no slots either (FixedImage below)
    json = None

try:
    import hashlib
except ImportError:
    try:
        import uhashlib as hashlib
    except ImportError:
        hashlib = None

try:
    from binascii import hexlify
except ImportError:
    hexlify = None


def _hex(data):
    if hexlify is not None:
        return hexlify(data).decode()
    return "".join("0123456789abcdef"[b >> 4] + "0123456789abcdef"[b & 15] for b in data)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _sync(f):
    f.flush()
    if hasattr(os, "fsync"):
        os.fsync(f.fileno())


def _write_json(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc))
        _sync(f)
    os.rename(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def parse_version(text):
    """'1.2.3' -> (1, 2, 3); None if it is not dot-separated numbers."""
    parts = text.split(".")
    if not parts or len(parts) > 4:
        return None
    out = []
    for p in parts:
        if not p or not p.isdigit():
            return None
        out.append(int(p))
    return tuple(out)


class Slots:
    def __init__(self, root, factory_version, capacity):
        self.root = root
        self.capacity = capacity
        try:
            os.mkdir(root)
        except OSError:
            pass
        boot = _read_json(self._path("boot.json"))
        if boot is None:
            boot = {"active": 0, "versions": [factory_version, ""]}
            _write_json(self._path("boot.json"), boot)
        self.active = boot["active"]
        self.versions = boot["versions"]
        pending = self.pending()
        if pending is not None and pending.get("slot") == self.active:
            # the switch happened, the node stopped before it removed pending.json
            self._remove("pending.json")

    def _path(self, name):
        return self.root + "/" + name

    def _remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass

    @property
    def version(self):
        return self.versions[self.active]

    @property
    def inactive(self):
        return 1 - self.active

    def slot_path(self, slot):
        return self._path("slot" + str(slot) + ".bin")

    def pending(self):
        return _read_json(self._path("pending.json"))

    def received(self):
        return _size(self.slot_path(self.inactive))

    def begin(self, manifest_text, signature_hex, size):
        """Start a transfer, or resume the same one. Returns the offset to continue from."""
        pending = self.pending()
        if (pending is not None and pending.get("manifest") == manifest_text
                and pending.get("signature") == signature_hex and pending.get("slot") == self.inactive):
            have = self.received()
            if have <= size:
                return have
        self.abort()
        with open(self.slot_path(self.inactive), "wb") as f:
            _sync(f)
        _write_json(self._path("pending.json"), {"slot": self.inactive, "manifest": manifest_text,
                                                 "signature": signature_hex})
        return 0

    def write(self, data):
        """Append data to the inactive slot; returns the new received length."""
        with open(self.slot_path(self.inactive), "ab") as f:
            f.write(data)
            _sync(f)
        return self.received()

    def sha256(self):
        h = hashlib.sha256()
        with open(self.slot_path(self.inactive), "rb") as f:
            while True:
                block = f.read(512)
                if not block:
                    break
                h.update(block)
        return _hex(h.digest())

    def switch(self, version):
        """Boot from the inactive slot from now on (the image in it has been verified)."""
        versions = list(self.versions)
        versions[self.inactive] = version
        _write_json(self._path("boot.json"), {"active": self.inactive, "versions": versions})
        self.active = self.inactive
        self.versions = versions
        self._remove("pending.json")

    def abort(self):
        self._remove("pending.json")
        try:
            os.remove(self.slot_path(self.inactive))
        except OSError:
            pass


class FixedImage:
    """A board that cannot update itself over the link (a micro:bit: its runtime is flashed over USB mass
    storage, and its flat file system has no rename). It runs one image; FW_BEGIN is refused."""

    def __init__(self, version):
        self.version = version
        self.active = 0
        self.capacity = 0
