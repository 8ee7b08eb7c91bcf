"""Training loop, evaluation, optimizer and checkpoints."""
