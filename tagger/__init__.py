"""shoptag's tagging brain: encoders, kNN propagation, the classifier head, fusion and calibration."""
