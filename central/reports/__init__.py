"""Central's reports for the education department (``edugate report ...``)."""
