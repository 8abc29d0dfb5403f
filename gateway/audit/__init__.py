"""``edugate audit CONFIG``: the gateway's evidence for the December security review (docs/security.md)."""
