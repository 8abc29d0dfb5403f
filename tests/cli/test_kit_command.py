"""``edugate kit sign|check``: the lab kits' firmware tools in the ``edugate`` command, as IT staff run them
(docs/firmware-bridge.md §9): central's key from ``edugate keygen``, a signed manifest, a gateway's verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edugate.firmware_bridge.update.manifest import SignedManifest, manifest_path


def _edugate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def test_kit_sign_and_check_through_the_edugate_command(tmp_path: Path) -> None:
    keys = tmp_path / "central-fw"
    made = _edugate("keygen", "--out", str(keys))
    assert made.returncode == 0, made.stderr
    image = tmp_path / "kit-1.1.0.bin"
    image.write_bytes(bytes(range(256)) * 40)

    signed = _edugate("kit", "sign", str(image), "--board", "microbit-v2", "--version", "1.1.0", "--key", f"{keys}.pem")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(f"{manifest_path(image)}: microbit-v2 1.1.0, 10240 bytes, sha256 ")
    manifest = SignedManifest.from_json(manifest_path(image).read_text()).manifest
    assert (manifest.board, manifest.version, manifest.size) == ("microbit-v2", "1.1.0", 10240)

    ok = _edugate("kit", "check", str(image), "--board", "microbit-v2", "--running", "1.0.0",
                  "--pubkey", f"{keys}.pub.pem")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: kit-1.1.0.bin may update a microbit-v2 from 1.0.0 to 1.1.0")

    wrong = _edugate("kit", "check", str(image), "--board", "esp32", "--running", "1.0.0",
                     "--pubkey", f"{keys}.pub.pem")
    assert wrong.returncode == 1 and "refused: wrong-board" in wrong.stderr

    image.write_bytes(b"\xff" + image.read_bytes()[1:])  # one byte changed after signing
    tampered = _edugate("kit", "check", str(image), "--board", "microbit-v2", "--running", "1.0.0",
                        "--pubkey", f"{keys}.pub.pem")
    assert tampered.returncode == 1 and "refused: bad-hash" in tampered.stderr

    listed = _edugate("kit", "--help")
    assert listed.returncode == 0 and "sign" in listed.stdout and "check" in listed.stdout
