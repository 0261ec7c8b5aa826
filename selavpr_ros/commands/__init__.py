"""Subcommands of the ``selavpr`` command line.

Each module here defines ``register(subparsers)``, which adds one subcommand whose parser
has a ``handler`` default: ``handler(args) -> int`` runs it and returns the exit status.
Modules import their heavy dependencies inside the handler, so ``selavpr --help`` stays fast.
"""
