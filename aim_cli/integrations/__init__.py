"""Adapters that plug aim's modulation into other engines (each imports its engine; aim's core never does)."""
