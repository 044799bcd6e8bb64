"""Benchmarks behind `mgvideo bench`; each module defines `register(subparsers)`."""
