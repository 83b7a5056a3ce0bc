"""Git as Leviathan runs it: one hardened command line for the forge, the worker and the tests."""
