"""``edugate ingest``: run one central ingest worker (broker -> VictoriaMetrics).

Registered in the main CLI; also runnable as ``python -m edugate.central.cli_ingest``. Configured by
``central.yaml`` (``--config``: broker, store, ingest, events); the options override single values of it.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from edugate.central.cli_common import CentralConfigOpt, central_config_or_exit, given, log_level_or_exit, setup_logging
from edugate.central.config import override_broker
from edugate.central.urls import BROKER_SCHEMES, check_store_url, parse_broker_url  # noqa: F401 - re-exported


def _read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(f"the {what} file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                                 f"offset {exc.start})") from None


def ingest(
    client_id: Annotated[str | None, typer.Option("--client-id", help="Fixed MQTT client id of this worker (its "
                                                  "persistent session: restart it with the same id). Required, "
                                                  "here or as ingest.client_id.", show_default=False)] = None,
    config: CentralConfigOpt = None,
    broker: Annotated[str | None, typer.Option("--broker", help="Broker URL: mqtt://host:port or mqtts://host:port "
                                               "[default: mqtt://127.0.0.1:1883].", show_default=False)] = None,
    broker_host: Annotated[str | None, typer.Option("--broker-host", help="Overrides the host of --broker.")] = None,
    broker_port: Annotated[int | None, typer.Option("--broker-port", help="Overrides the port of --broker.")] = None,
    username: Annotated[str | None, typer.Option("--username", help="MQTT user name.")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="File holding the MQTT password.")]
    = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for mqtts://.")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Shared-subscription group the workers split the load in; '' = a plain subscription "
        "(a single worker; the default: Mosquitto 2.0 does not restore shared subscriptions after its restart "
        "and drops what arrives before the workers re-subscribe) [default: ''].", show_default=False)] = None,
    store_url: Annotated[str | None, typer.Option("--store-url", help="InfluxDB-compatible base URL "
                                                  "(VictoriaMetrics: http://host:8428; it must run with "
                                                  "-dedup.minScrapeInterval=1ms) [default: http://127.0.0.1:8428].",
                                                  show_default=False)] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="Bucket (InfluxDB 2/3; ignored by VictoriaMetrics) "
                                               "[default: edugate].", show_default=False)] = None,
    org: Annotated[str | None, typer.Option("--org", help="Organisation (InfluxDB 2; ignored by VictoriaMetrics).",
                                            show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option("--store-token-file", help="File holding the store's API token.")]
    = None,
    batch_lines: Annotated[int | None, typer.Option("--batch-lines", min=1, help="Lines per write at most "
                                                    "[default: 10000].", show_default=False)] = None,
    batch_ms: Annotated[int | None, typer.Option("--batch-ms", min=0, help="Wait this long for a batch to fill "
                                                 "[default: 50].", show_default=False)] = None,
    queue_mb: Annotated[int | None, typer.Option("--queue-mb", min=1, help="In-memory queue bound (MiB); when "
                                                 "full, reading from the broker pauses [default: 64].",
                                                 show_default=False)] = None,
    events_db: Annotated[Path | None, typer.Option("--events-db", help="Also keep every event record (taps, "
                                                   "alarms, summaries) in this SQLite file; query with "
                                                   "'edugate events'.")] = None,
    stats_file: Annotated[Path | None, typer.Option("--stats-file", help="Write counters and the fleet table "
                                                    "here (JSON), see --stats-interval.")] = None,
    stats_interval: Annotated[float | None, typer.Option("--stats-interval", min=0.01, help="Seconds between two "
                                                         "writes of --stats-file [default: 1.0].",
                                                         show_default=False)] = None,
    summary_interval: Annotated[float | None, typer.Option("--summary-interval", help="Seconds between INFO "
                                                           "summaries (0: none) [default: 10].",
                                                           show_default=False)] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR "
                                                  "[default: INFO].", show_default=False)] = None,
) -> None:
    """Central ingest: broker -> VictoriaMetrics (shared subscription worker)."""
    cfg = central_config_or_exit(config)
    level = log_level_or_exit(given(log_level, cfg.log_level))
    try:
        broker_cfg = override_broker(cfg.broker, url=broker, host=broker_host, port=broker_port, username=username,
                                     password_file=password_file, ca_file=ca_file)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None
    try:
        store = check_store_url(store_url) if store_url is not None else cfg.store.url
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store-url") from None
    section = cfg.ingest
    worker_id = given(client_id, section.client_id)
    if worker_id is None:
        raise typer.BadParameter("give the worker's client id: --client-id ID, or ingest.client_id in --config FILE",
                                 param_hint="--client-id")
    address = broker_cfg.addresses[0]
    try:
        from edugate.central.ingest.worker import IngestConfig, IngestWorker  # central only: keep it out of gateways

        ingest_cfg = IngestConfig(
            client_id=worker_id, broker_host=address.host, broker_port=address.port,
            group=given(group, section.group), store_url=store, bucket=given(bucket, cfg.store.bucket),
            org=given(org, cfg.store.org),
            store_token=_read_secret(given(token_file, cfg.store.token_file), "store token") or "",
            username=broker_cfg.username,
            password=broker_cfg.password("--password-file" if password_file else "broker.password_file"),
            tls=broker_cfg.tls is not None, tls_ca_file=broker_cfg.tls.ca_file if broker_cfg.tls else None,
            batch_lines=given(batch_lines, section.batch_lines), batch_ms=given(batch_ms, section.batch_ms),
            queue_bytes=given(queue_mb, section.queue_mb) * 1024 * 1024,
            stats_file=given(stats_file, section.stats_file), events_db=given(events_db, cfg.events.db),
            stats_interval_s=given(stats_interval, section.stats_interval_s),
            summary_interval_s=given(summary_interval, section.summary_interval_s),
            confirm_stored=section.confirm_stored,
            broker=broker_cfg,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    setup_logging(level)
    if section.transport == "amqp":
        worker = _amqp_worker(ingest_cfg, section.amqp)
    else:
        worker = IngestWorker(ingest_cfg) if section.transport == "mqtt" else _nats_worker(ingest_cfg, section.nats)
    if cfg.events.postgres_dsn:  # the shared event database instead of the SQLite file (docs/central.md)
        from edugate.central.eventstore_pg import EventStoreUnavailable, PgEventStore

        try:
            worker.events = PgEventStore(cfg.events.postgres_dsn)
        except EventStoreUnavailable as exc:  # its message names host:port/db, never the password
            typer.echo(f"{config or 'central.yaml'}: events.postgres_dsn: {exc}; not started (systemd retries)",
                       err=True)
            raise typer.Exit(1) from None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        what = "stopping now" if worker.stopping else "writing what is queued, then disconnecting"
        logging.getLogger(__name__).info("%s: %s", signal.Signals(signum).name, what)
        worker.stop(hard=worker.stopping)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()



def _nats_worker(ingest_cfg: Any, nats: Any) -> Any:
    """``ingest.transport: nats``: a competing consumer of the JetStream stream (central/ingest/nats_worker.py)."""
    from edugate.central.ingest.nats_worker import NatsIngestWorker, NatsSettings

    return NatsIngestWorker(ingest_cfg, NatsSettings(
        servers=tuple(nats.servers), stream=nats.stream, durable=nats.durable, replicas=nats.replicas,
        max_bytes=nats.max_bytes_mb * 1024 * 1024, ack_wait_s=nats.ack_wait_s, source=nats.source))


def _amqp_worker(ingest_cfg: Any, amqp: Any) -> Any:
    """``ingest.transport: amqp``: a competing consumer of the RabbitMQ quorum queue (central/ingest/amqp_worker.py)."""
    from edugate.central.ingest.amqp_worker import AmqpIngestWorker, AmqpSettings, with_password

    password = _read_secret(amqp.password_file, "AMQP password")
    try:
        servers = tuple(with_password(url, password) for url in amqp.servers)
    except ValueError as exc:
        raise typer.BadParameter(f"ingest.amqp.servers: {exc}", param_hint="--config") from None
    return AmqpIngestWorker(ingest_cfg, AmqpSettings(servers=servers, queue=amqp.queue, replicas=amqp.replicas,
                                                     prefetch=amqp.prefetch))

if __name__ == "__main__":
    typer.run(ingest)
