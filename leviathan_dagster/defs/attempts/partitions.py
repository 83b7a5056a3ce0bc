import dagster as dg

# One partition per task, keyed ``<target>/<task>`` (ids are validated to be valid, immutable keys),
# so each task's attempt history shows in the partition view.
tasks_partitions = dg.DynamicPartitionsDefinition(name="tasks")
