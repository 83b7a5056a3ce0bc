"""GitHub's REST shapes, complete: every field GitHub's published description requires for the objects
the double answers (users, repositories, pull requests, comments, statuses, check runs, installations),
with absolute URLs under the double's own base so PyGithub's host checks and lazy completion work.

``tests/test_github_double_schemas.py`` validates these against githubkit's models of GitHub's
OpenAPI description; a field missing here is a test failure, not a kinder double.
"""

from __future__ import annotations

import hashlib
import subprocess

from github_double.state import Pull, Repo, State, iso

CREATED = "2024-01-01T00:00:00Z"


def stable_id(name: str) -> int:
    """The same login or slug always gets the same numeric id (GitHub's ids are stable too)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


class Urls:
    """Absolute URLs and bodies of the double, GitHub style (Enterprise layout: REST under /api/v3)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.api = base + "/api/v3"

    def user(self, login: str, user_id: int | None = None, kind: str = "User") -> dict:
        url = f"{self.api}/users/{login}"
        user_id = stable_id(login) if user_id is None else user_id
        return {
            "login": login,
            "id": user_id,
            "node_id": f"U_{user_id}",
            "avatar_url": f"{self.base}/avatars/u/{user_id}",
            "gravatar_id": "",
            "url": url,
            "html_url": f"{self.base}/{login}",
            "followers_url": f"{url}/followers",
            "following_url": f"{url}/following{{/other_user}}",
            "gists_url": f"{url}/gists{{/gist_id}}",
            "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{url}/subscriptions",
            "organizations_url": f"{url}/orgs",
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events{{/privacy}}",
            "received_events_url": f"{url}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def team(self, org: str, slug: str) -> dict:
        team_id = stable_id(f"{org}/{slug}")
        return {
            "id": team_id,
            "node_id": f"T_{team_id}",
            "url": f"{self.api}/organizations/{stable_id(org)}/team/{team_id}",
            "html_url": f"{self.base}/orgs/{org}/teams/{slug}",
            "name": slug,
            "slug": slug,
            "description": None,
            "privacy": "closed",
            "notification_setting": "notifications_enabled",
            "permission": "pull",
            "members_url": f"{self.api}/organizations/{stable_id(org)}/team/{team_id}/members{{/member}}",
            "repositories_url": f"{self.api}/organizations/{stable_id(org)}/team/{team_id}/repos",
            "type": "organization",
            "organization_id": stable_id(org),
            "parent": None,
        }

    def repo(self, repo: Repo, *, full: bool = True) -> dict:
        """A repository: ``full`` as GET /repos/{owner}/{repo} answers it (FullRepository), else as
        embedded in a pull request's head and base (Repository)."""
        api = f"{self.api}/repos/{repo.full_name}"
        data = {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self.user(repo.owner, kind="Organization"),
            "private": True,
            "html_url": f"{self.base}/{repo.full_name}",
            "description": None,
            "fork": False,
            "url": api,
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{api}/assignees{{/user}}",
            "blobs_url": f"{api}/git/blobs{{/sha}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "collaborators_url": f"{api}/collaborators{{/collaborator}}",
            "comments_url": f"{api}/comments{{/number}}",
            "commits_url": f"{api}/commits{{/sha}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "contributors_url": f"{api}/contributors",
            "deployments_url": f"{api}/deployments",
            "downloads_url": f"{api}/downloads",
            "events_url": f"{api}/events",
            "forks_url": f"{api}/forks",
            "git_commits_url": f"{api}/git/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "git_tags_url": f"{api}/git/tags{{/sha}}",
            "git_url": f"git://{self.base.split('://', 1)[1]}/{repo.full_name}.git",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "issue_events_url": f"{api}/issues/events{{/number}}",
            "issues_url": f"{api}/issues{{/number}}",
            "keys_url": f"{api}/keys{{/key_id}}",
            "labels_url": f"{api}/labels{{/name}}",
            "languages_url": f"{api}/languages",
            "merges_url": f"{api}/merges",
            "milestones_url": f"{api}/milestones{{/number}}",
            "notifications_url": f"{api}/notifications{{?since,all,participating}}",
            "pulls_url": f"{api}/pulls{{/number}}",
            "releases_url": f"{api}/releases{{/id}}",
            "ssh_url": f"git@{self.base.split('://', 1)[1].split(':')[0]}:{repo.full_name}.git",
            "stargazers_url": f"{api}/stargazers",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "subscribers_url": f"{api}/subscribers",
            "subscription_url": f"{api}/subscription",
            "tags_url": f"{api}/tags",
            "teams_url": f"{api}/teams",
            "trees_url": f"{api}/git/trees{{/sha}}",
            "clone_url": f"{self.base}/{repo.full_name}.git",
            "mirror_url": None,
            "hooks_url": f"{api}/hooks",
            "svn_url": f"{self.base}/{repo.full_name}",
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": repo.default_branch,
            "open_issues_count": sum(1 for p in repo.pulls.values() if p.state == "open"),
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private",
            "pushed_at": CREATED,
            "created_at": CREATED,
            "updated_at": CREATED,
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
            "allow_forking": False,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": sum(1 for p in repo.pulls.values() if p.state == "open"),
            "watchers": 0,
        }
        if full:
            data.update(subscribers_count=0, network_count=0)
        return data

    def branch_ref(self, state: State, repo: Repo, branch: str) -> dict:
        return {
            "label": f"{repo.owner}:{branch}",
            "ref": branch,
            "sha": state.branch_sha(repo, branch) or "0" * 40,
            "user": self.user(repo.owner, kind="Organization"),
            "repo": self.repo(repo, full=False),
        }

    def pull(self, state: State, repo: Repo, pr: Pull, *, full: bool = True) -> dict:
        """A pull request: ``full`` as the single-PR endpoints answer it (PullRequest), else as lists
        and the reviewer request answer it (PullRequestSimple)."""
        api = f"{self.api}/repos/{repo.full_name}"
        url = f"{api}/pulls/{pr.number}"
        html = f"{self.base}/{repo.full_name}/pull/{pr.number}"
        head_sha = state.branch_sha(repo, pr.head) or "0" * 40
        data = {
            "url": url,
            "id": pr.id,
            "node_id": f"PR_{pr.id}",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pr.number}",
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
            "number": pr.number,
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "user": self.user(pr.user, kind="Bot" if pr.user.endswith("[bot]") else "User"),
            "body": pr.body,
            "labels": [],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": iso(pr.created_at),
            "updated_at": iso(pr.updated_at),
            "closed_at": iso(pr.closed_at),
            "merged_at": iso(pr.merged_at),
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [self.user(r) for r in pr.requested_reviewers],
            "requested_teams": [self.team(repo.owner, t) for t in pr.requested_teams],
            "head": self.branch_ref(state, repo, pr.head),
            "base": self.branch_ref(state, repo, pr.base),
            "_links": {
                "self": {"href": url},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{pr.number}"},
                "comments": {"href": f"{api}/issues/{pr.number}/comments"},
                "review_comments": {"href": f"{url}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{url}/commits"},
                "statuses": {"href": f"{api}/statuses/{head_sha}"},
            },
            "author_association": "NONE",
            "auto_merge": None,
            "draft": pr.draft,
        }
        if full:  # the single-PR endpoints add these
            commits, additions, deletions, files = _diff_counts(state, repo, pr)
            data.update(
                merged=pr.merged,
                mergeable=None if pr.state != "open" else True,
                rebaseable=None if pr.state != "open" else True,
                mergeable_state="draft" if pr.draft else ("clean" if pr.state == "open" else "unknown"),
                merged_by=self.user(pr.merged_by) if pr.merged and pr.merged_by else None,
                comments=len(repo.comments.get(pr.number, [])),
                review_comments=0,
                maintainer_can_modify=False,
                commits=commits,
                additions=additions,
                deletions=deletions,
                changed_files=files,
            )
        return data

    def minimal_repo(self, repo: Repo) -> dict:
        """A repository as embedded in a combined status (MinimalRepository)."""
        data = self.repo(repo, full=False)
        for key in ("forks", "open_issues", "watchers", "license", "mirror_url", "homepage", "language"):
            data.pop(key, None)
        return data

    def installation(self, app_id: int, installation_id: int, owner: str, permissions: dict) -> dict:
        return {
            "id": installation_id,
            "account": self.user(owner, kind="Organization"),
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api}/app/installations/{installation_id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.base}/organizations/{owner}/settings/installations/{installation_id}",
            "app_id": app_id,
            "app_slug": f"app-{app_id}",
            "target_id": stable_id(owner),
            "target_type": "Organization",
            "permissions": dict(permissions),
            "events": [],
            "created_at": CREATED,
            "updated_at": CREATED,
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def check_run(
        self, repo: Repo, run_id: int, sha: str, name: str, status: str, conclusion: str | None, at: float
    ) -> dict:
        now = iso(at)
        api = f"{self.api}/repos/{repo.full_name}"
        return {
            "id": run_id,
            "head_sha": sha,
            "node_id": f"CR_{run_id}",
            "external_id": "",
            "url": f"{api}/check-runs/{run_id}",
            "html_url": f"{self.base}/{repo.full_name}/runs/{run_id}",
            "details_url": f"{self.base}/{repo.full_name}/actions/runs/{run_id}/job/{run_id}",
            "status": status,
            "conclusion": conclusion if status == "completed" else None,
            "started_at": now,
            "completed_at": now if status == "completed" else None,
            "output": {
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{api}/check-runs/{run_id}/annotations",
            },
            "name": name,
            "check_suite": {"id": run_id + 1},
            "app": None,
            "pull_requests": [],
        }


def _diff_counts(state: State, repo: Repo, pr: Pull) -> tuple[int, int, int, int]:
    """(commits, additions, deletions, changed files) of head over base, as GitHub counts them."""
    base, head = state.branch_sha(repo, pr.base), state.branch_sha(repo, pr.head)
    if base is None or head is None:
        return 0, 0, 0, 0
    try:
        commits = int(state.git(repo, "rev-list", "--count", f"{base}..{head}").stdout.strip() or 0)
        numstat = state.git(repo, "diff", "--numstat", f"{base}...{head}").stdout.splitlines()
    except subprocess.CalledProcessError:
        return 0, 0, 0, 0
    added = sum(int(line.split("\t")[0]) for line in numstat if line.split("\t")[0].isdigit())
    removed = sum(int(line.split("\t")[1]) for line in numstat if line.split("\t")[1].isdigit())
    return commits, added, removed, len(numstat)
