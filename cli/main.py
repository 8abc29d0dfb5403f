"""The whole ``edugate`` command: the gateway's own commands (:mod:`edugate.cli.gateway_commands`) and every other
one (the pages' users, the doctor, central's, the simulators, provisioning, the kits' firmware, the models)."""

from __future__ import annotations

from edugate.central.audit_cli import register as register_central_audit
from edugate.central.cli import register as register_central
from edugate.cli.gateway_commands import new_app
from edugate.cli.sim import app as sim_app
from edugate.common.provisioning_cli import app as provision_app
from edugate.firmware_bridge.update.cli import app as kit_app
from edugate.gateway.audit.cli import register as register_audit
from edugate.gateway.cli_card_check import card_check
from edugate.gateway.cli_privacy import pseudonym
from edugate.gateway.doctor.cli import register as register_doctor
from edugate.gateway.firstboot_cli import register as register_firstboot
from edugate.gateway.web.cli import register as register_web_users
from edugate.ml_models.anomaly.cli import app as model_app

__all__ = ["app"]

app = new_app()
# the gateway's other commands: who may log in to the pages (a gateway's or central's), re-identification
register_web_users(app)
register_doctor(app)  # edugate doctor, edugate migrate (issue 19)
register_audit(app)  # edugate audit: evidence for the yearly security review (issue 18)
register_firstboot(app)  # edugate firstboot: a bundle from the SD card's boot partition (issue 19)
app.command()(pseudonym)
app.command(name="card-check")(card_check)
# central's commands (ingest, central, keygen/sign/send, events, library-report, central-check)
register_central(app)
register_central_audit(app)  # edugate central-audit: the yearly security review (issue 18)
# the device simulators (edugate sim NAME ...)
app.add_typer(sim_app, name="sim")
app.add_typer(provision_app, name="provision")  # identities for mTLS, the broker's TLS listener and ACL (issue 18)
app.add_typer(kit_app, name="kit", help="Lab kits' firmware: sign an image (central), check it as a gateway "
              "would (docs/firmware-bridge.md).")  # issue 17
app.add_typer(model_app, name="model")  # a school's own anomaly models (issue 14, docs/models.md)

if __name__ == "__main__":
    app()
