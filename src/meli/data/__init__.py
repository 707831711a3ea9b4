"""Titles in: sources, formats, normalization, vocabulary."""
