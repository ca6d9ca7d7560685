"""The command line's command groups, one module each; runner/cli.py wires them."""
