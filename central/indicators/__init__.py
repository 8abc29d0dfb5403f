"""The operations centre's indicators: defined once (``catalogue``), computed from the time-series store and the
event store per school (``compute``), summed up to districts and the city, then anonymised (``anonymise``) before
anything leaves central (the API in ``edugate.central.api``, the supervision reports in ``edugate.central.reports``).
The same definitions, for people: ``docs/metrics.md``."""
