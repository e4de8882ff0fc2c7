"""`aim generate`: (being written)."""
