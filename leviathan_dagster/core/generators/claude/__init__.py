"""The Claude generator: the model edits the workspace with Anthropic's tools, checked by the harness."""
