"""Classify MercadoLibre product titles: a reproducible DVC pipeline."""

__version__ = "0.1.0"
