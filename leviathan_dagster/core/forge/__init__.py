"""Forges: where attempt branches are pushed and pull requests are opened."""
