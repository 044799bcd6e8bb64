"""One module per `mgvideo` subcommand; each defines `register(subparsers)`."""
