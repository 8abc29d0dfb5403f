"""Central's firmware tooling, as IT staff run it: keygen (edugate's), sign, check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edugate.firmware_bridge.update.manifest import SignedManifest, manifest_path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=30)


def test_sign_then_check_like_a_gateway(tmp_path: Path) -> None:
    keys = tmp_path / "central-fw"
    assert _run("edugate.central.command_tools", "keygen", "--out", str(keys)).returncode == 0
    image = tmp_path / "kit-1.1.0.bin"
    image.write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    cli = "edugate.firmware_bridge.update.cli"

    signed = _run(cli, "sign", str(image), "--board", "microbit-v2", "--version", "1.1.0", "--key", f"{keys}.pem")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(f"{manifest_path(image)}: microbit-v2 1.1.0, 2564 bytes, sha256 ")
    assert SignedManifest.from_json(manifest_path(image).read_text()).manifest.version == "1.1.0"

    ok = _run(cli, "check", str(image), "--board", "microbit-v2", "--running", "1.0.3", "--pubkey", f"{keys}.pub.pem")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: kit-1.1.0.bin may update a microbit-v2 from 1.0.3 to 1.1.0")
    same = _run("edugate.cli", "kit", "check", str(image), "--board", "microbit-v2", "--running", "1.0.3", "--pubkey",
                f"{keys}.pub.pem")  # `edugate kit check`, as docs/firmware-bridge.md section 10 has it
    assert (same.returncode, same.stdout.strip()) == (ok.returncode, ok.stdout.strip()), same.stderr

    down = _run(cli, "check", str(image), "--board", "microbit-v2", "--running", "1.2.0", "--pubkey", f"{keys}.pub.pem")
    assert down.returncode == 1 and "refused: downgrade: image version 1.1.0 is not newer" in down.stderr

    image.write_bytes(image.read_bytes()[:-1])
    cut = _run(cli, "check", str(image), "--board", "microbit-v2", "--running", "1.0.0", "--pubkey", f"{keys}.pub.pem")
    assert cut.returncode == 1 and "refused: truncated: image is 2563 bytes, the manifest says 2564" in cut.stderr

    bad = _run(cli, "sign", str(image), "--board", "x", "--version", "one", "--key", f"{keys}.pem")
    assert bad.returncode == 2 and "not dotted numbers" in bad.stderr
