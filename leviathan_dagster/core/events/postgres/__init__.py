"""The production event-log backend: PostgreSQL, for many writers on many machines."""
