"""Thin Typer layers: parse options, call the pipeline, print, map errors to exit codes."""
