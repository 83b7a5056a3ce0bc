"""Every REST answer of the double, checked against GitHub's published description as it leaves.

The models are githubkit's, generated from GitHub's OpenAPI description (API version 2022-11-28, what
PyGithub gets). A body that does not validate is never sent: the double answers 500 naming the field,
so any test that meets a drifted answer fails, not only ``test_github_double_schemas.py``.
"""

from __future__ import annotations

import functools
import importlib

# Route (the Rest handler's name, or an App endpoint) -> the schema of its success body.
SUCCESS = {
    "rate_limit": "RateLimitOverview",
    "get_repo": "FullRepository",
    "list_pulls": "list[PullRequestSimple]",
    "create_pull": "PullRequest",
    "get_pull": "PullRequest",
    "update_pull": "PullRequest",
    "merge_pull": "PullRequestMergeResult",
    "request_reviewers": "PullRequestSimple",
    "list_comments": "list[IssueComment]",
    "create_comment": "IssueComment",
    "combined_status": "CombinedCommitStatus",
    "create_status": "Status",
    "list_check_runs": "ReposOwnerRepoCommitsRefCheckRunsGetResponse200",
    "repo_installation": "Installation",
    "access_token": "InstallationToken",
}


@functools.cache
def _adapter(name: str):
    from pydantic import TypeAdapter

    models = importlib.import_module("githubkit_schemas.v2022_11_28.models")
    if name.startswith("list["):
        return TypeAdapter(list[getattr(models, name[5:-1])])
    return TypeAdapter(getattr(models, name))


def violation(route: str, status: int, body: object) -> str | None:
    """Why ``body`` (answered with ``status`` by ``route``) is not what GitHub answers; None if it is."""
    if status >= 400:
        name = "ValidationError" if isinstance(body, dict) and "errors" in body else "BasicError"
    elif route in SUCCESS:
        name = SUCCESS[route]
    else:
        return f"route {route!r} has no schema in github_double/schemas.py"
    try:
        _adapter(name).validate_python(body)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return f"{route} {status} is not a valid {name}: {exc}"
    return None
