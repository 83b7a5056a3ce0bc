"""Which tasks are ready and which attempts to request: one planning API for every caller."""
