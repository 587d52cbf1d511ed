"""``python -m silodiff`` runs the CLI."""

from .cli.main import main

main()
