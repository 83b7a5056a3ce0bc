import dagster as dg

# One partition per target id from leviathan.yaml; added by the attempt sensor (and attempt_schedule).
targets_partitions = dg.DynamicPartitionsDefinition(name="targets")
