"""Learning: the training loop, contrastive and alignment losses, evaluation, metrics."""
