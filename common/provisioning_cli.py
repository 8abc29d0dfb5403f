"""``edugate provision``: the CA, gateway bundles (one or a CSV batch), central's identities, the broker's
certificate, TLS listener and ACL (docs/security.md). ``cryptography`` is imported only when a command runs, so
that ``edugate`` starts on an install without it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from edugate.common.card_identity import CardIdentityRule
    from edugate.common.provisioning import CertificateAuthority, Role

app = typer.Typer(name="provision", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Identities for mTLS: a school/district CA, gateway keys and certificates, the broker's "
                  "TLS listener and ACL (docs/security.md).")

CaDir = Annotated[Path, typer.Option("--ca", help="The CA folder (ca.pem, ca.key, records.jsonl) central holds.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (created).")]
Brokers = Annotated[list[str] | None, typer.Option("--broker", help="host:port of a broker the gateway connects "
                                                   "to (repeat for failover); default mqtt.example.org:8883.")]
Days = Annotated[int, typer.Option("--days", min=1, max=3650, help="Validity of the certificate.")]
DEFAULT_BROKERS = ["mqtt.example.org:8883"]


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def _ca(folder: Path) -> CertificateAuthority:
    from edugate.common.provisioning import CertificateAuthority, ProvisioningError

    try:
        return CertificateAuthority(folder)
    except ProvisioningError as exc:
        _fail(exc)


@app.command("ca")
def make_ca(out: Out, name: Annotated[str, typer.Option("--name", help="The CA's name, e.g. 'District 7 "
                                                        "schools CA 2026'.")],
            days: Days = 3650) -> None:
    """Create a CA (ca.pem, ca.key 0600, records.jsonl). Keep ca.key offline or on central only."""
    from edugate.common.provisioning import CertificateAuthority, ProvisioningError

    try:
        ca = CertificateAuthority.create(out, name, days=days)
    except ProvisioningError as exc:
        _fail(exc)
    typer.echo(f"{out}: CA {name!r} valid until {ca.cert.not_valid_after_utc:%Y-%m-%d}")


@app.command("gateway")
def gateway(school: Annotated[str, typer.Argument(help="School id.")],
            gateway_id: Annotated[str, typer.Argument(metavar="GATEWAY", help="Gateway id.")],
            out: Out, ca: Annotated[Path | None, typer.Option("--ca", help="Issue the certificate from this CA "
                                                              "folder; without it only a key and CSR are made.")]
            = None, broker: Brokers = None, days: Days = 397) -> None:
    """One gateway's bundle: key (0600), certificate (or CSR), ca.pem, edugate.yaml skeleton, acl.lines."""
    from edugate.common.provisioning import ProvisioningError, gateway_bundle

    authority = _ca(ca) if ca else None
    try:
        bundle = gateway_bundle(out, school, gateway_id, brokers=broker or DEFAULT_BROKERS, ca=authority, days=days)
    except ProvisioningError as exc:
        _fail(exc)
    made = "certificate gateway.pem" if bundle.cert else "request gateway.csr (sign it: edugate provision sign)"
    typer.echo(f"{out}: {school}/{gateway_id}: key gateway.key (0600), {made}, edugate.yaml, acl.lines")


@app.command("batch")
def batch(csv_file: Annotated[Path, typer.Argument(metavar="CSV", help="Columns school,gateway[,brokers].")],
          ca: CaDir, out: Out, broker: Brokers = None, days: Days = 397,
          school_keys: Annotated[Path | None, typer.Option("--school-keys", help="Folder of the schools' "
                                                           "pseudonymisation keys (<school>.key, made if missing): "
                                                           "each bundle gets its school's as school.key.")] = None,
          admin: Annotated[str | None, typer.Option("--admin", help="Give each gateway's pages a first admin "
                                                    "user of this name with a random password (listed in "
                                                    "OUT/admin-passwords.csv, 0600).")] = None,
          card_identity: Annotated[str | None, typer.Option(
              "--card-identity", metavar="RULE", help="The schools' card identity rule for every bundle's config "
              "(privacy.card_identity, docs/privacy.md), e.g. '{version: 1, prox_bits: 32}'; with --school-keys it "
              "is recorded next to each school's key.")] = None) -> None:
    """One bundle per CSV row in OUT/SCHOOL/GATEWAY/ (a tray of SD cards; copy one onto each card's boot
    partition as edugate/, docs/operators.md). Every CSV problem is listed before anything is issued."""
    from edugate.common.bundle_extras import add_admin, add_school_key, write_passwords
    from edugate.common.provisioning import ProvisioningError, gateway_bundle, read_batch

    rule = _card_identity(card_identity)
    authority = _ca(ca)
    passwords: list[tuple[str, str, str, str]] = []
    try:
        rows = read_batch(csv_file, broker or DEFAULT_BROKERS)
        if school_keys is not None:  # each school's key agrees with the rule before anything is issued
            from edugate.common.privacy import open_school_key

            for school in dict.fromkeys(row.school for row in rows):
                open_school_key(school_keys / f"{school}.key", rule)
        for row in rows:
            folder = out / row.school / row.gateway
            gateway_bundle(folder, row.school, row.gateway, brokers=row.brokers, ca=authority, days=days,
                           card_identity=rule)
            if school_keys is not None:
                add_school_key(folder, row.school, school_keys)
            if admin is not None:
                passwords.append((row.school, row.gateway, admin, add_admin(folder, admin)))
    except (ProvisioningError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"{out}: {len(rows)} gateway bundles; now run: edugate provision acl --ca {ca}")
    if passwords:
        typer.echo(f"{write_passwords(out, passwords)}: the admins' first passwords: hand them over, then delete it")


def _card_identity(text: str | None) -> CardIdentityRule | None:
    """``--card-identity``'s YAML mapping as a rule; a clear error saying what is wrong with it."""
    import yaml
    from pydantic import ValidationError

    from edugate.common.card_identity import CardIdentityRule

    if text is None:
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"not YAML: {exc}", param_hint="--card-identity") from None
    if not isinstance(doc, dict):
        raise typer.BadParameter("give a mapping such as '{version: 1, prox_bits: 32}'",
                                 param_hint="--card-identity") from None
    try:
        return CardIdentityRule.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems, param_hint="--card-identity") from None


@app.command("csr")
def csr(school: Annotated[str, typer.Argument(help="School id.")],
        gateway_id: Annotated[str, typer.Argument(metavar="GATEWAY", help="Gateway id.")],
        key: Annotated[Path, typer.Option("--key", help="The gateway's existing key (renewal keeps it).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the request.")]) -> None:
    """A certificate request from an existing key: the renewal path (the key never leaves the gateway)."""
    from edugate.common.provisioning import ProvisioningError, gateway_identity, load_private_key, make_csr, write_pem

    try:
        write_pem(make_csr(load_private_key(key), gateway_identity(school, gateway_id)), out)
    except ProvisioningError as exc:
        _fail(exc)
    typer.echo(f"{out}: request for {school}/{gateway_id}")


@app.command("sign")
def sign(request: Annotated[Path, typer.Argument(metavar="CSR", help="The request (PEM).")], ca: CaDir,
         out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the certificate.")],
         role: Annotated[str, typer.Option("--role", help="gateway, ingest or sender.")] = "gateway",
         days: Days = 397) -> None:
    """Issue a certificate for a request made on the gateway (first install or renewal); recorded."""
    from edugate.common.provisioning import ROLES, ProvisioningError, load_csr, write_pem

    if role not in ROLES:
        _fail(ValueError(f"--role must be one of {', '.join(ROLES)}"))
    authority = _ca(ca)
    try:
        cert = authority.sign_csr(load_csr(request), role=role, days=days)
    except ProvisioningError as exc:
        _fail(exc)
    write_pem(cert, out)
    typer.echo(f"{out}: certificate for {cert.subject.rfc4514_string()} until {cert.not_valid_after_utc:%Y-%m-%d}")


@app.command("central")
def central(name: Annotated[str, typer.Argument(help="An id, e.g. ingest-1 or sender-1 (the MQTT user name).")],
            role: Annotated[str, typer.Option("--role", help="ingest (reads only) or sender (writes cmd topics).")],
            ca: CaDir, out: Out, days: Days = 397) -> None:
    """A certificate for a central component: NAME.pem and NAME.key (0600)."""
    from edugate.common.provisioning import ProvisioningError, new_key, write_pem, write_private_key

    if role not in ("ingest", "sender"):
        _fail(ValueError("--role must be ingest or sender"))
    authority = _ca(ca)
    key = new_key()
    r: Role = "ingest" if role == "ingest" else "sender"  # the only two left after the check above
    try:
        cert = authority.issue(name, key.public_key(), role=r, days=days)
    except ProvisioningError as exc:
        _fail(exc)
    write_private_key(key, out / f"{name}.key")
    write_pem(cert, out / f"{name}.pem")
    typer.echo(f"{out}: {name} ({role}): {name}.pem, {name}.key (0600)")


def _server_certificate(ca: Path, names: list[str], days: int, stem: Path) -> CertificateAuthority:
    """A server certificate for ``names`` from the CA in ``ca``: ``<stem>.pem`` and ``<stem>.key`` (0600)."""
    from edugate.common.provisioning import ProvisioningError, write_pem, write_private_key

    authority = _ca(ca)
    try:
        cert, key = authority.issue_server(names, days=days)
    except ProvisioningError as exc:
        _fail(exc)
    write_private_key(key, stem.with_suffix(".key"))
    write_pem(cert, stem.with_suffix(".pem"))
    return authority


@app.command("broker")
def broker(names: Annotated[list[str], typer.Argument(help="Host names/addresses the gateways connect to.")],
           ca: CaDir, out: Out, port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8883,
           install_folder: Annotated[Path, typer.Option("--install-folder", help="Where the files will be on "
                                                        "the broker host.")] = Path("/etc/mosquitto/edugate"),
           days: Days = 397) -> None:
    """The broker's server certificate, ca.pem, the TLS listener (edugate-tls.conf) and the ACL."""
    from edugate.common.provisioning import render_acl, render_tls_conf, write_pem

    authority = _server_certificate(ca, names, days, out / "server")
    write_pem(authority.cert, out / "ca.pem")
    (out / "edugate-tls.conf").write_text(render_tls_conf(install_folder, port))
    (out / "acl").write_text(render_acl(authority.records(), revoked=authority.revoked_serials()))
    authority.write_crl(out / "crl.pem")  # Mosquitto needs one (empty at first) to start with crlfile
    typer.echo(f"{out}: server.pem/server.key for {', '.join(names)}, ca.pem, edugate-tls.conf (port {port}), acl, "
               "crl.pem")


@app.command("web")
def web(names: Annotated[list[str], typer.Argument(help="Names/addresses people type to reach the pages, e.g. "
                                                   "192.168.10.5 gw1.thpt-lqd.edu.vn.")],
        ca: CaDir, out: Out, days: Days = 397) -> None:
    """A server certificate for a gateway's pages (web.tls: web.pem, web.key 0600) from the CA; the school's
    computers must trust the CA (install ca.pem on them)."""
    _server_certificate(ca, names, days, out / "web")
    typer.echo(f"{out}: web.pem/web.key for {', '.join(names)}: set web.tls.cert_file and key_file to them")


@app.command("acl")
def acl(ca: CaDir, output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (else "
                                                               "stdout).")] = None) -> None:
    """The Mosquitto ACL from the CA's records; reload Mosquitto (SIGHUP) after writing it."""
    from edugate.common.provisioning import ProvisioningError, render_acl

    authority = _ca(ca)
    try:
        text = render_acl(authority.records(), revoked=authority.revoked_serials())
    except ProvisioningError as exc:
        _fail(exc)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@app.command("revoke")
def revoke(ca: CaDir, school: Annotated[str, typer.Option("--school", help="The gateway's school.")],
           gateway: Annotated[str, typer.Option("--gateway", help="The gateway (stolen, retired, compromised).")],
           broker_folder: Annotated[Path, typer.Option("--broker-folder", help="Where the broker reads acl and "
                                                       "crl.pem (rewritten here).")],
           reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "") -> None:
    """Revoke every certificate of a gateway: recorded in revoked.jsonl, the broker's CRL (crl.pem) and ACL written
    again. Then restart Mosquitto (it reads the CRL when it starts); the ACL alone takes effect on SIGHUP."""
    from edugate.common.provisioning import ProvisioningError, gateway_identity, render_acl

    authority = _ca(ca)
    try:
        serials = authority.revoke(gateway_identity(school, gateway), reason)
        (broker_folder / "acl").write_text(render_acl(authority.records(), revoked=authority.revoked_serials()))
        authority.write_crl(broker_folder / "crl.pem")
    except (ProvisioningError, OSError) as exc:
        _fail(exc)
    typer.echo(f"{school}/{gateway}: revoked {len(serials)} certificate(s) ({', '.join(serials) or 'none new'}); "
               f"wrote {broker_folder / 'acl'} and {broker_folder / 'crl.pem'}: restart Mosquitto")


@app.command("crl")
def crl(ca: CaDir, output: Annotated[Path, typer.Option("--output", "-o", help="The broker's crl.pem.")]) -> None:
    """Write the broker's certificate revocation list again (it is valid a year: past that the broker refuses
    every client, so run this at least yearly, e.g. monthly from cron, then restart Mosquitto)."""
    from edugate.common.provisioning import ProvisioningError

    try:
        _ca(ca).write_crl(output)
    except (ProvisioningError, OSError) as exc:
        _fail(exc)
    typer.echo(f"{output}: written")


@app.command("expiring")
def expiring(ca: CaDir, within_days: Annotated[int, typer.Option("--within-days", min=0)] = 30) -> None:
    """List certificates (latest per identity) that lapse within N days; exit 1 if any."""
    from edugate.common.provisioning import ProvisioningError
    from edugate.common.provisioning import expiring as find

    try:
        soon = find(_ca(ca).records(), within_days)
    except ProvisioningError as exc:
        _fail(exc)
    for record in soon:
        typer.echo(f"{record.identity} ({record.role}): expires {record.not_after}")
    raise typer.Exit(code=1 if soon else 0)
