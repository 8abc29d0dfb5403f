"""Central-side tooling for the downlink: ``edugate keygen``, ``edugate sign`` and ``edugate send``.

Registered in the main CLI by ``edugate.central.cli``; also runnable as ``python -m edugate.central.command_tools``.
The envelope, signing and key loading are the wire contract's (``edugate.contract.commands``); the broker and the
signing key may come from ``central.yaml`` (``--config``).
Operators' guide: docs/commands.md.

Exit codes of ``send``: 0 the gateway answered ``ok``; 1 it answered ``rejected`` or ``failed``;
2 bad usage (options, key file); 3 no answer (broker unreachable or refused us, or no result in time).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit
from edugate.central.config import CentralConfig, override_broker
from edugate.common.mqtt import BrokerAddress, BrokerConfig, MqttTls
from edugate.contract.topics import gateway_prefix

if TYPE_CHECKING:  # cryptography and the command machinery load only when a command here runs
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey



EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3

app = typer.Typer(
    name="edugate-commands",
    help="Central tooling for signed gateway commands: keygen, sign, send.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

KeyOpt = Annotated[Path | None, typer.Option("--key", help="Central's private signing key (PEM, from keygen; "
                                             "default: signing.private_key of --config).", show_default=False)]
SchoolOpt = Annotated[str | None, typer.Option("--school", help="Target school id.", show_default=False)]
GatewayOpt = Annotated[str | None, typer.Option("--gateway", help="Target gateway id.", show_default=False)]
NameOpt = Annotated[str | None, typer.Option("--name", help="Command name, e.g. ping, device.command.",
                                             show_default=False)]
ArgsOpt = Annotated[str, typer.Option("--args", help="Command arguments as a JSON object.")]
TtlOpt = Annotated[float, typer.Option("--ttl", min=1, help="Seconds until the command expires (gateways accept "
                                       "at most 24 h by default).")]
IdOpt = Annotated[str | None, typer.Option("--id", help="Command id (default: a new UUID). Never reuse one.",
                                           show_default=False)]


# ---------------------------------------------------------------- keygen


def key_paths(out: Path) -> tuple[Path, Path]:
    """``central-cmd`` -> (``central-cmd.pem``, ``central-cmd.pub.pem``); a ``.pem`` suffix on ``out`` is dropped."""
    stem = out.name.removesuffix(".pem")
    return out.with_name(stem + ".pem"), out.with_name(stem + ".pub.pem")


def write_keypair(out: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new Ed25519 private key (PEM, mode 0600) and its public key; return both paths and the fingerprint."""
    private_path, public_path = key_paths(out)
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                raise FileExistsError(f"{path} exists; not overwriting a key (use --force to replace it)")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edugate.contract.commands import fingerprint

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.unlink(missing_ok=True)
    # created 0600: never readable by others, not even between creating and chmod-ing it
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path, fingerprint(key)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Base name: writes OUT.pem (private, mode 0600) and OUT.pub.pem.",
                                      show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
) -> None:
    """Create central's Ed25519 command-signing key pair."""
    try:
        private_path, public_path, name = write_keypair(out, force=force)
    except (FileExistsError, OSError) as exc:
        typer.echo(f"keygen: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"private key {private_path} (mode 0600: keep it on the signing host only)")
    typer.echo(f"public key  {public_path} (copy to every gateway, list it in downlink.public_keys)")
    typer.echo(f"fingerprint {name}")


# ---------------------------------------------------------------- sign


def _parse_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"must be a JSON object, not {type(value).__name__}", param_hint="--args")
    return value


def _load_key(path: Path) -> Ed25519PrivateKey:
    from edugate.contract.commands import CommandKeyError, load_private_key

    try:
        key = load_private_key(path)
    except CommandKeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--key") from None
    if os.stat(path).st_mode & 0o077:
        typer.echo(f"warning: {path} is readable by other users; chmod 600 it", err=True)
    return key


def _signed(key_path: Path | None, school: str | None, gateway: str | None, name: str | None, args_json: str,
            ttl: float, command_id: str | None) -> dict[str, Any]:
    missing = [opt for opt, value in (("--key", key_path), ("--school", school), ("--gateway", gateway),
                                      ("--name", name)) if value is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)}")
    assert key_path and school and gateway and name
    key = _load_key(key_path)
    from edugate.contract.commands import sign_command

    try:
        return sign_command(key, school=school, gateway=gateway, name=name, args=_parse_args(args_json), ttl_s=ttl,
                            command_id=command_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


@app.command()
def sign(key: KeyOpt = None, school: SchoolOpt = None, gateway: GatewayOpt = None, name: NameOpt = None,
         args_json: ArgsOpt = "{}", ttl: TtlOpt = 300, command_id: IdOpt = None, config: CentralConfigOpt = None,
         ) -> None:
    """Print a signed command envelope (one JSON line), e.g. to send later with 'send --envelope'."""
    key = key or central_config_or_exit(config).signing.private_key
    typer.echo(_dumps(_signed(key, school, gateway, name, args_json, ttl, command_id)))


# ---------------------------------------------------------------- send


class SendError(Exception):
    """The command could not be delivered, or the gateway's answer could not be awaited."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None

    def config(self) -> BrokerConfig:
        tls = MqttTls(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file) \
            if self.tls or self.ca_file else None
        return BrokerConfig(brokers=[str(BrokerAddress(self.host, self.port))], tls=tls, username=self.username,
                            keepalive_s=30)


def send_envelope(envelope: Mapping[str, Any], broker: Broker | BrokerConfig, timeout: float) -> dict[str, Any] | None:
    """Publish a signed envelope (QoS 1) and wait for the gateway's cmd-result with the same id.

    ``broker``: central.yaml's broker section (its brokers are tried in order), or one :class:`Broker`.
    Returns the result document, or None when none came within ``timeout`` seconds. Raises
    :class:`SendError` when the broker cannot be reached or refuses us.
    """
    import paho.mqtt.client as mqtt

    from edugate.common.mqtt import paho_client

    target = envelope["target"]
    base = gateway_prefix(target["school"], target["gateway"])
    deadline = time.monotonic() + timeout
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()
    refusals: list[str] = []
    answer: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refusals.append(f"the broker refused the connection: {reason}")
        else:
            client.subscribe(f"{base}/cmd-result", qos=1)
        connected.set()

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            refusals.append(f"the broker refused the subscription to {base}/cmd-result (check the ACL)")
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("id") == envelope["id"] and not answered.is_set():
            answer.update(doc)
            answered.set()

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    cfg, password = (broker.config(), broker.password) if isinstance(broker, Broker) else (broker, None)
    try:
        client = paho_client(cfg, identifier=f"edugate-send-{uuid.uuid4().hex[:12]}", password=password)
    except OSError as exc:  # the password file, or the TLS files
        raise SendError(f"cannot set up the connection: {exc}") from None
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect_first()
    except OSError as exc:  # ssl.SSLError included
        raise SendError(f"cannot reach the broker {', '.join(cfg.brokers)}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(left()) or not subscribed.wait(left()):
            raise SendError(refusals[0] if refusals else f"no answer from the broker within {timeout:g} s")
        if refusals:
            raise SendError(refusals[0])
        info = client.publish(f"{base}/cmd/{envelope['name']}", _dumps(envelope).encode(), qos=1)
        info.wait_for_publish(left())
        if not info.is_published():
            raise SendError(f"the broker did not acknowledge the command within {timeout:g} s")
        return answer if answered.wait(left()) else None
    finally:
        client.disconnect()
        client.loop_stop()


def _read_envelope(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--envelope") from None
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--envelope") from None
    try:
        target = doc["target"]
        if not all(isinstance(v, str) for v in (doc["id"], doc["name"], target["school"], target["gateway"])):
            raise TypeError
    except (KeyError, TypeError):
        raise typer.BadParameter("not a command envelope (id, name, target.school, target.gateway)",
                                 param_hint="--envelope") from None
    return doc


def _broker(cfg: CentralConfig, url: str | None, username: str | None, password_file: Path | None,
            ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> BrokerConfig:
    """central.yaml's broker section with the options applied."""
    try:
        broker = override_broker(cfg.broker, url=url, username=username, password_file=password_file,
                                 ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None
    try:  # read again when connecting: fail early here, naming the option
        broker.password("--password-file" if password_file is not None else "broker.password_file")
    except ValueError as exc:  # PasswordFileError: its message names the option and the file
        raise typer.BadParameter(str(exc)) from None
    return broker


@app.command()
def send(
    key: KeyOpt = None, school: SchoolOpt = None, gateway: GatewayOpt = None, name: NameOpt = None,
    args_json: ArgsOpt = "{}", ttl: TtlOpt = 300, command_id: IdOpt = None,
    envelope_file: Annotated[Path | None, typer.Option("--envelope", help="Send this already signed envelope (a file "
                                                       "from 'sign', or - for stdin) instead of signing one.",
                                                       show_default=False)] = None,
    config: CentralConfigOpt = None,
    broker: Annotated[str | None, typer.Option("--broker", help="mqtt://host:port or mqtts://host:port "
                                               "[default: mqtt://127.0.0.1:1883].", show_default=False)] = None,
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name.")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="File holding the MQTT password.")]
    = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Client certificate (mTLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Client certificate's key (mTLS).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the gateway's answer.")]
    = 30.0,
) -> None:
    """Sign a command (or take --envelope), publish it, print the gateway's cmd-result; exit 0 only on ok."""
    cfg = central_config_or_exit(config)
    if envelope_file is not None:
        envelope = _read_envelope(envelope_file)
    else:
        envelope = _signed(key or cfg.signing.private_key, school, gateway, name, args_json, ttl, command_id)
    target = _broker(cfg, broker, username, password_file, ca_file, tls_cert, tls_key)
    try:
        result = send_envelope(envelope, target, timeout)
    except SendError as exc:
        typer.echo(f"send: {exc}", err=True)
        raise typer.Exit(EXIT_NO_ANSWER) from None
    if result is None:
        typer.echo(f"send: no answer to command {envelope['id']} within {timeout:g} s (is the gateway online, with "
                   "the downlink enabled?)", err=True)
        raise typer.Exit(EXIT_NO_ANSWER)
    typer.echo(_dumps(result))
    status = result.get("status")
    if status != "ok":
        typer.echo(f"send: {status} ({result.get('code', '-')}): {result.get('reason')}", err=True)
        raise typer.Exit(EXIT_REFUSED)


if __name__ == "__main__":
    app()
