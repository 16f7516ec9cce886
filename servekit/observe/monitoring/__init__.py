"""Model monitoring: drift, outlier and adversarial detectors fed from the payload journal,
their results as a time series, metrics, CloudEvents and alerts.

Kept import-light: ``model.yaml`` parsing imports ``monitoring.config`` only; the detectors
(scipy, scikit-learn, river) load when a model configures them.
"""
