"""Developer scripts, run as ``python scripts/<name>.py``; a package so tests import them."""
