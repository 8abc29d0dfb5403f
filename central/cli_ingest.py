"""``edugate ingest``: run one central ingest worker (broker -> VictoriaMetrics).

Registered in the main CLI; also runnable as ``python -m edugate.central.cli_ingest``.
"""

from __future__ import annotations

import logging
import signal
import sys
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

BROKER_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` (or ``mqtts://`` for TLS, or bare ``host[:port]``) -> (host, port, tls)."""
    text = url if "://" in url else f"mqtt://{url}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in BROKER_SCHEMES:
        raise ValueError(f"{url!r}: scheme must be one of {', '.join(s + '://' for s in BROKER_SCHEMES)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r}: expected mqtt://host:port with no path, query or credentials")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    default_port, tls = BROKER_SCHEMES[parts.scheme]
    return parts.hostname, port or default_port, tls


def check_store_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` of the store's InfluxDB-compatible API; returned without a trailing /."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the store URL must start with http:// or https://")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query string or fragment, please")
    return url.rstrip("/")


def _read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the {what} file {path}: {exc.strerror}") from None


def ingest(
    client_id: Annotated[str, typer.Option("--client-id", help="Fixed MQTT client id of this worker (its persistent "
                                           "session: restart it with the same id).", show_default=False)],
    broker: Annotated[str, typer.Option("--broker", help="Broker URL: mqtt://host:port or mqtts://host:port.")]
    = "mqtt://127.0.0.1:1883",
    broker_host: Annotated[str | None, typer.Option("--broker-host", help="Overrides the host of --broker.")] = None,
    broker_port: Annotated[int | None, typer.Option("--broker-port", help="Overrides the port of --broker.")] = None,
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name.")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="File holding the MQTT password.")]
    = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    group: Annotated[str, typer.Option(
        "--group", help="Shared-subscription group the workers split the load in; '' = a plain subscription "
        "(a single worker).")]
    = "edugate-ingest",
    store_url: Annotated[str, typer.Option("--store-url", help="InfluxDB-compatible base URL (VictoriaMetrics: "
                                           "http://host:8428; it must run with -dedup.minScrapeInterval=1ms).")]
    = "http://127.0.0.1:8428",
    bucket: Annotated[str, typer.Option("--bucket", help="Bucket (InfluxDB 2/3; ignored by VictoriaMetrics).")]
    = "edugate",
    org: Annotated[str, typer.Option("--org", help="Organisation (InfluxDB 2; ignored by VictoriaMetrics).")] = "",
    token_file: Annotated[Path | None, typer.Option("--store-token-file", help="File holding the store's API token.")]
    = None,
    batch_lines: Annotated[int, typer.Option("--batch-lines", min=1, help="Lines per write at most.")] = 10_000,
    batch_ms: Annotated[int, typer.Option("--batch-ms", min=0, help="Wait this long for a batch to fill.")] = 50,
    queue_mb: Annotated[int, typer.Option("--queue-mb", min=1, help="In-memory queue bound (MiB); when full, "
                                          "reading from the broker pauses.")] = 64,
    events_db: Annotated[Path | None, typer.Option("--events-db", help="Also keep every event record (taps, "
                                                   "alarms, summaries) in this SQLite file; query with "
                                                   "'edugate events'.")] = None,
    stats_file: Annotated[Path | None, typer.Option("--stats-file", help="Write counters and the fleet table "
                                                    "here (JSON), see --stats-interval.")] = None,
    stats_interval: Annotated[float, typer.Option("--stats-interval", min=0.01, help="Seconds between two "
                                                  "writes of --stats-file.")] = 1.0,
    summary_interval: Annotated[float, typer.Option("--summary-interval", help="Seconds between INFO summaries "
                                                    "(0: none).")] = 10.0,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Central ingest: broker -> VictoriaMetrics (shared subscription worker)."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r}: use DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    try:
        host, port, tls = parse_broker_url(broker)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None
    try:
        store = check_store_url(store_url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store-url") from None
    try:
        from edugate.central.ingest.worker import IngestConfig, IngestWorker  # central only: keep it out of gateways

        cfg = IngestConfig(
            client_id=client_id, broker_host=broker_host or host, broker_port=broker_port or port,
            group=group, store_url=store, bucket=bucket, org=org,
            store_token=_read_secret(token_file, "store token") or "",
            username=username, password=_read_secret(password_file, "password"),
            tls=tls or ca_file is not None, tls_ca_file=ca_file,
            batch_lines=batch_lines, batch_ms=batch_ms, queue_bytes=queue_mb * 1024 * 1024,
            stats_file=stats_file, events_db=events_db, stats_interval_s=stats_interval,
            summary_interval_s=summary_interval,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))

    worker = IngestWorker(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        what = "stopping now" if worker.stopping else "writing what is queued, then disconnecting"
        logging.getLogger(__name__).info("%s: %s", signal.Signals(signum).name, what)
        worker.stop(hard=worker.stopping)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()


if __name__ == "__main__":
    typer.run(ingest)
