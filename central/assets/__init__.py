"""Central's asset registry: every school's equipment, from the ``asset`` and ``asset_usage`` events the
gateways forward (kept in the event store), with its status and the two KPIs the city plans name (share of
equipment on digital records, share in use) per school and district. See docs/assets.md."""
