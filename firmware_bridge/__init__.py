"""The link to microcontroller lab kits: the framed, checksummed protocol (``protocol``), the gateway's end of
a line (``host``), signed A/B firmware updates (``update``), the reference node firmware (``node``) and the
Arduino header (``arduino/edugate_link.h``). Specification: docs/firmware-bridge.md."""
