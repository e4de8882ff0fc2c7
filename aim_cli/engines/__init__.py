"""Engines that run aim's tasks beyond one process: Ray Serve endpoints and Ray Data jobs for images."""
