"""Command lines: argument parsing only; each calls the library function that does the work."""
