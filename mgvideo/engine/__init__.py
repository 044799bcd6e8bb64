"""The trainer and what it needs: checkpoints, evaluation, metrics, distributed plumbing."""
