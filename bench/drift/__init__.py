"""Drift detection benchmark: servekit's detectors against alibi-detect and evidently."""
