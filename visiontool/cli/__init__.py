"""The command-line faces of the engine. Modules here import only typer and the standard library
at top level; engine imports happen inside command bodies so `--help` never loads torch."""
