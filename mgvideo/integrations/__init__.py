"""Thin adapters of the multigrid pieces to the trainers people already use (optional extras).

`mgvideo.integrations.lightning` needs `pip install multigrid-video[lightning]`,
`mgvideo.integrations.accelerate` needs `[accelerate]`. This package imports neither framework; only its
framework modules do, and nothing in the core imports them.
"""
