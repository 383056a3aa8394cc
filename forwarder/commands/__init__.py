"""One module per `openalgo-forwarder` subcommand: its arguments and what it does."""
