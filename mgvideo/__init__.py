"""multigrid-video: the Multigrid method for efficiently training video models (Wu et al., CVPR 2020)."""

__version__ = "0.1.0"
