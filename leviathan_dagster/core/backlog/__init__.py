"""The target's backlog file: parsed, judged, cached by blob id, and written back."""
