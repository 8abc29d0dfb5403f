"""The operations centre's open, versioned, read-only HTTP API (``/api/v1``): anonymised indicators, API keys per
consumer, rate limits. ``docs/api/README.md``; its OpenAPI document: ``docs/api/openapi.json``."""
