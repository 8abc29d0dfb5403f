"""The gateway: the edge runtime that runs in a school (see docs and DESIGN)."""
