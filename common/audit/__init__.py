"""Evidence for the yearly security review (issue 18): what is installed (versions, CycloneDX SBOM), what
listens, the security events of the year, and the report that a school hands over. The site-specific
baseline checks live with each side (``gateway/audit``)."""
