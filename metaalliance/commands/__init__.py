"""One module per ``metaalliance`` subcommand: ``register(subparsers, common)`` and ``run(args)``."""
