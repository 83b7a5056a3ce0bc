"""Leviathan's business logic: plain Python, no Dagster import (a test enforces this)."""
