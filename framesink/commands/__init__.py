"""One module per `framesink` subcommand."""
