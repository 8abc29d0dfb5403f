"""The web pages: the gateway's status and live-readings pages, and central's fleet view.

Importing this package (e.g. for :class:`gateway.web.config.WebConfig`) does not import FastAPI;
``gateway.web.serve`` and ``gateway.web.central`` do.
"""
