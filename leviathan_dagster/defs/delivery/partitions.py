import dagster as dg

# One partition per UTC day; end_offset=1 so today's (partial) figures can be computed too.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=1)
