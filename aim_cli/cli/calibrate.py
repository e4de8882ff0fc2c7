"""`aim calibrate`: (being written)."""
