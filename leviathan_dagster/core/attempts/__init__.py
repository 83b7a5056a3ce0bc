"""Attempts: the ledger folded from the log, their lifecycle events, the runner, PRs and operator actions."""
