"""Calibration: find the modulation strength that reaches a target metric.

One clean pass over the data gives the expected metric at every sigma analytically
(aim_cli.theory); a root finder picks the sigma, and a seeded Monte Carlo run confirms it.
Modules: core (curves, bounds, root finding, Monte Carlo summaries), datasets (labelled data
readers), classify, segment and text (one per task), report (profiles and JSON).
"""
