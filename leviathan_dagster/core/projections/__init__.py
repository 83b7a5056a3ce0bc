"""Projections of the event log kept current incrementally (see ``log_view``)."""
