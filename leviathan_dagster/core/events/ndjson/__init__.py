"""The embedded event-log backend: one hash-chained NDJSON file."""
