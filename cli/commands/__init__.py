"""The command groups of ``sevvo``, one module each."""
