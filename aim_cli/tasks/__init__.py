"""Tasks: inputs -> model -> modulation -> results. They know nothing about the command line."""
