"""Deterministic demo data for the marketplace and the `marketplace seed` command."""
