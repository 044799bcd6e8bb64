"""`python -m mgvideo ...` (what torchrun launches) is the same as the `mgvideo` command."""

from mgvideo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
