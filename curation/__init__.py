"""Dagster-free curation library: parsing, normalizing, rules, dedup, decontamination, releases.

Nothing in this package imports Dagster; the asset layer (``assets/``) wraps these functions.
"""

__version__ = "0.1.0"
