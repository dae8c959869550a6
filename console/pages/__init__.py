"""The console's pages, a module per area; each exposes ``routes``."""
