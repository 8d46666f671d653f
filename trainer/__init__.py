"""Training: offline training and evaluation, and the retraining service."""
