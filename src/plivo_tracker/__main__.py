"""`python -m plivo_tracker` → the CLI."""

from plivo_tracker.cli import main

main()
