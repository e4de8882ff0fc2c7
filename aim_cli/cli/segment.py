"""`aim segment`: (being written)."""
