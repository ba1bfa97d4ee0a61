"""Command-line interface: `python -m lnfree_core <command> ...`; one module per command group.

Each module's top level imports only what building its parser needs; the handlers import the modules
that pull in torch/transformers (models, train, analysis, export) when they run, so that
`python -m lnfree_core --help` (and a mistyped command) answers in about 1 s; importing torch and
transformers' model classes alone took about 12 s on the 2-core development machine under load
(measured 2026-12-01). Other modules import at the top.
"""
