"""Signed firmware updates for lab kits: the manifest central signs, and the gateway's sender (A/B on the node)."""
