"""Object detectors (Notes: 002 §4): Viola-Jones (Haar features, AdaBoost, the attentional cascade)."""
