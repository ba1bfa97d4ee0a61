"""Command-line interface: `python -m lnfree_core <command> ...`; one module per command group."""
