"""Generators write an attempt's change into the workspace: ``docs``, ``tests`` and ``claude``."""
