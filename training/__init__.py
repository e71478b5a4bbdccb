"""Data preparation, the WideResNet model, training and evaluation."""
