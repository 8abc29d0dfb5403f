"""The push adapter: the operations centre's anonymised figures (the open API's rows) delivered to the
department's data warehouse on a schedule, as signed (HMAC-SHA256), idempotent batches, retried with exponential
backoff, with a dead-letter record and a command to re-deliver it. ``docs/operations-centre.md``."""
