"""The gateway's Debian package (scripts/build_deb.sh), built once for this module (about two minutes: marked
slow; ``bash scripts/test_deb.sh`` runs these tests alone).

* Its contents: the venv under /opt/edugate with scripts naming /opt/edugate/venv (not the build's staging
  folder), the config as a conffile, the unit, the maintainer scripts, the command on the PATH.
* Extracted into a fresh root (``dpkg-deb -x``) and run from /opt/edugate in a private mount namespace: the
  packaged ``edugate check`` validates the packaged config; ``systemd-analyze verify`` accepts the units.
* Installed with dpkg into a fresh Debian root made by debootstrap (cached in ``$EDUGATE_DEB_BASE``, default
  /var/tmp/edugate-bookworm-base; skipped where debootstrap or the mirror is missing): postinst creates the
  system user and the data folder, and the gateway started in that root as that user sends READY=1 and its
  records reach a real Mosquitto on this machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, Collector, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dpkg-deb") is None or not Path("/usr/bin/python3").exists(),
                       reason="builds a Debian package: needs Debian's dpkg-deb and python3"),
    pytest.mark.skipif(os.geteuid() != 0, reason="installs into a chroot and mounts in a private namespace: root"),
]

BASE = Path(os.environ.get("EDUGATE_DEB_BASE", "/var/tmp/edugate-bookworm-base"))


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("EDUGATE_DEB"):  # a package built already (scripts/build_deb.sh), to test it again
        return Path(os.environ["EDUGATE_DEB"])
    out = tmp_path_factory.mktemp("deb")
    build = subprocess.run(["bash", "scripts/build_deb.sh", str(out)], capture_output=True, text=True, cwd=REPO,
                           timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("edugate_*.deb")
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def in_namespace(script: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a private mount namespace: its mounts are gone when it ends."""
    return subprocess.run(["unshare", "-m", "sh", "-ec", script], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def test_the_package_holds_the_application_config_and_unit(deb: Path) -> None:
    info = dpkg_deb("--info", str(deb))
    assert "Package: edugate" in info and "Depends: python3 (>= 3.11), python3 (<< 3.12), adduser" in info
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info
    files = {line.split()[-1] if "->" not in line else line.split()[-3] for line in dpkg_deb("--contents",
                                                                                              str(deb)).splitlines()}
    for path in ("./opt/edugate/venv/bin/edugate", "./opt/edugate/venv/bin/python3", "./usr/bin/edugate",
                 "./etc/edugate/gateway.yaml", "./lib/systemd/system/edugate.service",
                 "./usr/share/doc/edugate/operators.md", "./usr/share/doc/edugate/samples/modbus.yaml",
                 "./var/lib/edugate/"):
        assert path in files, path
    assert not [f for f in files if "__pycache__" in f]  # compiled on the machine by postinst
    assert not [f for f in files if "site-packages/tests/" in f or "site-packages/edugate/tests" in f]
    central = [f for f in files if "edugate-ingest" in f or "edugate-central" in f]
    assert central == []  # central's units are not a gateway's


def test_the_extracted_package_runs_its_own_edugate_and_its_units_verify(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    edugate = root / "opt/edugate/venv/bin/edugate"
    assert edugate.read_text().splitlines()[0] == "#!/opt/edugate/venv/bin/python3"
    assert "/stage" not in (root / "opt/edugate/venv/pyvenv.cfg").read_text()
    assert os.readlink(root / "usr/bin/edugate") == "/opt/edugate/current/bin/edugate"
    assert os.readlink(root / "opt/edugate/current") == "venv"  # what the unit starts, until a gateway.update
    run = in_namespace(f"""
        mount --bind {root}/opt /opt
        /opt/edugate/venv/bin/edugate check {root}/etc/edugate/gateway.yaml
        /opt/edugate/venv/bin/python -c 'import edugate, sys; print(edugate.__path__[0]); print(sys.prefix)'
        systemd-analyze verify {root}/lib/systemd/system/edugate.service {REPO}/packaging/systemd/central/*.service
    """)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith("gateway.yaml: OK: school my-school, gateway gw-1, 0 devices (none), broker "
                             "127.0.0.1:1883")
    assert lines[1].startswith("/opt/edugate/venv/lib/python3") and lines[2] == "/opt/edugate/venv"


# ---------------------------------------------------------------- a fresh Debian root


@pytest.fixture(scope="module")
def base_root() -> Path:
    if (BASE / "usr/bin/python3").exists() and (BASE / "usr/sbin/adduser").exists():
        return BASE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap) and no base root at "
                    f"{BASE}")
    partial = BASE.with_name(BASE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    made = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,adduser", "bookworm",
                           str(partial), "http://deb.debian.org/debian"], capture_output=True, text=True,
                          timeout=1800)
    if made.returncode != 0:
        pytest.skip(f"debootstrap failed (no mirror?): {made.stderr[-500:]}")
    partial.rename(BASE)
    return BASE


@pytest.fixture
def fresh_root(base_root: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base_root), str(root)], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_installed_in_a_fresh_debian_root_it_makes_its_user_and_runs(deb: Path, fresh_root: Path, tmp_path: Path,
                                                                   mosquitto: Mosquitto) -> None:
    root = fresh_root
    shutil.copy(deb, root / "tmp/edugate.deb")
    install = subprocess.run(["chroot", str(root), "dpkg", "-i", "/tmp/edugate.deb"], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    passwd = (root / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("edugate:"))
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000 and user[6] in ("/usr/sbin/nologin", "/bin/false")  # a system user that cannot log in
    data = (root / "var/lib/edugate").stat()
    assert (data.st_uid, data.st_gid, data.st_mode & 0o777) == (uid, gid, 0o750)
    conf = (root / "etc/edugate/gateway.yaml").stat()
    assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o777) == (0, gid, 0o640)
    for folder, mode in (("etc/edugate", 0o770), ("opt/edugate", 0o775)):  # config.apply, gateway.update write here
        st = (root / folder).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, mode), folder
    assert list((root / "opt/edugate/venv/lib").glob("python3*/site-packages/edugate/gateway/__pycache__/*.pyc"))

    # the site's config: a synthetic device, the broker on this machine (the root shares our network)
    (root / "etc/edugate/gateway.yaml").write_text(textwrap.dedent(f"""\
        schema_version: 1
        school: test-school
        gateway: gw-deb
        clock: {{synced: always}}
        uplink: {{host: 127.0.0.1, port: {mosquitto.port}}}
        storage: {{path: /var/lib/edugate/outbox.sqlite}}
        privacy: {{secret_file: /var/lib/edugate/school.key}}
        devices:
          - {{id: sim, driver: synthetic, interval_s: 0.2}}
        """))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "run/notify.sock"))
    os.chmod(root / "run/notify.sock", 0o666)
    notify.settimeout(60)
    collector = Collector(mosquitto.port).start()
    gateway = subprocess.Popen(
        ["unshare", "-m", "sh", "-ec", f"""
            mount -t proc proc {root}/proc
            mount --rbind /dev {root}/dev
            exec chroot --userspec=edugate:edugate {root} env NOTIFY_SOCKET=/run/notify.sock HOME=/var/lib/edugate \
                /usr/bin/edugate run /etc/edugate/gateway.yaml
        """], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        wait_for(lambda: collector.by_device()["sim"] >= 5, 30, "readings from the packaged gateway")
    finally:
        gateway.terminate()
        out, _ = gateway.communicate(timeout=30)
        collector.stop()
        notify.close()
    assert gateway.returncode == 0, out
    key = (root / "var/lib/edugate/school.key").stat()
    assert key.st_uid == uid and key.st_mode & 0o077 == 0  # made by the gateway, as its user, private
