"""A wire-level GitHub double for tests: REST (PyGithub's calls), App installation tokens and real git
smart HTTP, with fault injection. See server.py."""

from github_double.faults import secondary_rate_limit, server_error, slow, stale_read
from github_double.server import GithubDouble

__all__ = ["GithubDouble", "secondary_rate_limit", "server_error", "slow", "stale_read"]
