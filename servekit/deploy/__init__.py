"""Deployments: services (predictor, transformer, canary, shadow, experiments) and graphs."""
