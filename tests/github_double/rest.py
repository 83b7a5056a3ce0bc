"""The REST endpoints of the GitHub double (the subset PyGithub calls for Leviathan), GitHub's
status codes and error messages included (422 Validation Failed, 405 not mergeable, 404 Not Found)."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs

from github_double.render import Urls
from github_double.state import Identity, Pull, Repo, State, iso

DOCS = "https://docs.github.com/rest"
Answer = tuple[int, dict[str, str], object]


class HttpError(Exception):
    def __init__(self, status: int, message: str, errors: list | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors

    def answer(self) -> Answer:
        body: dict = {"message": self.message, "documentation_url": DOCS, "status": str(self.status)}
        if self.errors is not None:
            body["errors"] = self.errors
        return self.status, {}, body


def not_found() -> HttpError:
    return HttpError(404, "Not Found")


def validation(message: str, **error) -> HttpError:
    return HttpError(422, "Validation Failed", [{"resource": "PullRequest", "message": message, **error}])


class Rest:
    def __init__(self, state: State, urls: Urls) -> None:
        self.state, self.urls = state, urls
        self.routes: list[tuple[str, re.Pattern, Callable[..., Answer]]] = [
            ("GET", re.compile(r"^/rate_limit$"), self.rate_limit),
            ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)$"), self.get_repo),
            ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls$"), self.list_pulls),
            ("POST", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls$"), self.create_pull),
            ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)$"), self.get_pull),
            ("PATCH", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)$"), self.update_pull),
            ("PUT", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/merge$"), self.merge_pull),
            (
                "POST",
                re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/requested_reviewers$"),
                self.request_reviewers,
            ),
            ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$"), self.list_comments),
            ("POST", re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$"), self.create_comment),
            ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([^/]+)/status$"), self.combined_status),
            ("POST", re.compile(r"^/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$"), self.create_status),
            (
                "GET",
                re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([^/]+)/check-runs$"),
                self.list_check_runs,
            ),
        ]

    def route_name(self, method: str, path: str) -> str | None:
        """The handler that answers ``method path`` (its name keys github_double/schemas.py)."""
        for route_method, pattern, handler in self.routes:
            if route_method == method and pattern.match(path):
                return handler.__name__
        return None

    def dispatch(self, method: str, path: str, query: str, body: dict, who: Identity) -> Answer:
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and route_method == method:
                return handler(who, *match.groups(), query=parse_qs(query), body=body)
        raise not_found()

    def repo(self, who: Identity, owner: str, name: str) -> Repo:
        repo = self.state.repos.get(f"{owner}/{name}")
        # GitHub answers 404, not 403, for a repository the credential may not see.
        if repo is None or not who.can_access(repo.full_name):
            raise not_found()
        return repo

    def require_write(self, who: Identity, permission: str) -> None:
        """GitHub's 403 for a credential that may read but not write ``permission``."""
        if not who.can_write(permission):
            by = "integration" if who.kind == "installation" else "personal access token"
            raise HttpError(403, f"Resource not accessible by {by}")

    def pull(self, repo: Repo, number: str) -> Pull:
        pr = repo.pulls.get(int(number))
        if pr is None:
            raise not_found()
        return pr

    # -- endpoints ---------------------------------------------------------------------------------
    def rate_limit(self, who: Identity, *, query, body) -> Answer:
        used, reset = self.state.usage.get(who.login, (0, self.state.clock() + 3600))
        core = {
            "limit": 5000,
            "remaining": 5000 - used,
            "reset": int(reset),
            "used": used,
            "resource": "core",
        }
        search = {"limit": 30, "remaining": 30, "reset": int(reset), "used": 0, "resource": "search"}
        resources = {"core": core, "graphql": dict(core, resource="graphql"), "search": search}
        return 200, {}, {"resources": resources, "rate": core}

    def get_repo(self, who, owner, name, *, query, body) -> Answer:
        return 200, {}, self.urls.repo(self.repo(who, owner, name))

    def list_pulls(self, who, owner, name, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        state = query.get("state", ["open"])[0]
        head = query.get("head", [None])[0]
        base = query.get("base", [None])[0]
        pulls = sorted(repo.pulls.values(), key=lambda p: p.number, reverse=True)  # GitHub: newest first
        pulls = [
            p
            for p in pulls
            if (state == "all" or p.state == state)
            and (head is None or head == f"{repo.owner}:{p.head}")
            and (base is None or base == p.base)
        ]
        per_page = min(100, int(query.get("per_page", ["30"])[0]))
        page = int(query.get("page", ["1"])[0])
        chunk = pulls[(page - 1) * per_page : page * per_page]
        headers = {}
        last = max(1, -(-len(pulls) // per_page))
        if page < last:
            url = f"{self.urls.api}/repos/{repo.full_name}/pulls?state={state}&per_page={per_page}"
            url += f"&head={head}" if head else ""
            headers["Link"] = f'<{url}&page={page + 1}>; rel="next", <{url}&page={last}>; rel="last"'
        return 200, headers, [self.urls.pull(self.state, repo, p, full=False) for p in chunk]

    def create_pull(self, who, owner, name, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.require_write(who, "pull_requests")
        head, base = str(body.get("head", "")), str(body.get("base", ""))
        head = head.split(":", 1)[1] if ":" in head else head
        if not body.get("title"):
            raise validation("title is required", field="title", code="missing_field")
        if self.state.branch_sha(repo, base) is None:
            raise validation("base is invalid", field="base", code="invalid")
        if self.state.branch_sha(repo, head) is None:
            raise validation("head is invalid", field="head", code="invalid")
        if head == base:
            raise validation(f"No commits between {base} and {head}", code="custom")
        if body.get("draft") and not repo.drafts_supported:
            # GitHub's answer, word for word: a top-level message, no "errors" list.
            raise HttpError(422, "Draft pull requests are not supported in this repository.")
        with self.state.lock:
            for pr in repo.pulls.values():
                if pr.state == "open" and pr.head == head and pr.base == base:
                    raise validation(f"A pull request already exists for {repo.owner}:{head}.", code="custom")
            now = self.state.clock()
            pr = Pull(
                number=max(repo.pulls, default=0) + 1,
                id=self.state.new_id(),
                title=str(body["title"]),
                body=str(body.get("body") or ""),
                head=head,
                base=base,
                draft=bool(body.get("draft", False)),
                user=who.login,
                created_at=now,
                updated_at=now,
            )
            repo.pulls[pr.number] = pr
        return (
            201,
            {"Location": f"{self.urls.api}/repos/{repo.full_name}/pulls/{pr.number}"},
            self.urls.pull(self.state, repo, pr),
        )

    def get_pull(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        return 200, {}, self.urls.pull(self.state, repo, self.pull(repo, number))

    def update_pull(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.require_write(who, "pull_requests")
        with self.state.lock:
            pr = self.pull(repo, number)
            for key in ("title", "body", "base"):
                if key in body:
                    setattr(pr, key, str(body[key]))
            if "state" in body:
                if body["state"] not in ("open", "closed"):
                    raise validation("state is invalid", field="state", code="invalid")
                if pr.merged:
                    raise validation("Cannot change the state of a merged pull request", code="custom")
                pr.state = body["state"]
                pr.closed_at = self.state.clock() if pr.state == "closed" else None
            pr.updated_at = self.state.clock()
        return 200, {}, self.urls.pull(self.state, repo, pr)

    def merge_pull(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.require_write(who, "pull_requests")
        with self.state.lock:
            pr = self.pull(repo, number)
            if pr.state != "open":
                raise HttpError(405, "Pull Request is not mergeable")
            if pr.draft:
                raise HttpError(405, "Pull Request is still a draft")
            if body.get("sha") and body["sha"] != self.state.branch_sha(repo, pr.head):
                raise HttpError(409, "Head branch was modified. Review and try the merge again.")
            message = (
                body.get("commit_title") or f"Merge pull request #{pr.number} from {repo.owner}/{pr.head}"
            )
            sha = self.state.merge(repo, pr, message)
            if sha is None:
                raise HttpError(405, "Pull Request is not mergeable")
            now = self.state.clock()
            pr.state, pr.merged, pr.merged_at, pr.closed_at = "closed", True, now, now
            pr.merge_commit_sha, pr.updated_at, pr.merged_by = sha, now, who.login
        return 200, {}, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def request_reviewers(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.require_write(who, "pull_requests")
        users, teams = list(body.get("reviewers") or []), list(body.get("team_reviewers") or [])
        with self.state.lock:
            author = self.pull(repo, number).user
        if author in users:
            raise validation("Review cannot be requested from pull request author.", code="custom")
        if teams and who.kind == "installation" and "members" not in who.permissions:
            # Requesting a team needs the App's organization "members" permission.
            raise HttpError(403, "Resource not accessible by integration")
        unknown = [u for u in users if u not in repo.collaborators] + [
            t for t in teams if t not in repo.teams
        ]
        if unknown:
            raise HttpError(
                422,
                "Reviews may only be requested from collaborators. One or more of the users or teams you "
                f"specified is not a collaborator of the {repo.full_name} repository.",
            )
        with self.state.lock:
            pr = self.pull(repo, number)
            # GitHub lists each reviewer once, however often a request names them.
            pr.requested_reviewers += [u for u in dict.fromkeys(users) if u not in pr.requested_reviewers]
            pr.requested_teams += [t for t in dict.fromkeys(teams) if t not in pr.requested_teams]
        return 201, {}, self.urls.pull(self.state, repo, pr, full=False)

    def list_comments(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.pull(repo, number)
        return 200, {}, list(repo.comments.get(int(number), []))

    def create_comment(self, who, owner, name, number, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        self.require_write(who, "pull_requests")
        self.pull(repo, number)
        comment_id = self.state.new_id()
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{self.urls.api}/repos/{repo.full_name}/issues/comments/{comment_id}",
            "html_url": f"{self.urls.base}/{repo.full_name}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self.urls.api}/repos/{repo.full_name}/issues/{number}",
            "body": str(body.get("body", "")),
            "user": self.urls.user(who.login, kind="Bot" if who.kind == "installation" else "User"),
            "author_association": "NONE",
            "created_at": iso(self.state.clock()),
            "updated_at": iso(self.state.clock()),
        }
        with self.state.lock:
            repo.comments.setdefault(int(number), []).append(comment)
        return 201, {}, comment

    def combined_status(self, who, owner, name, ref, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        sha = self.state.branch_sha(repo, ref) or ref
        statuses = repo.statuses.get(sha, [])
        latest = {s["context"]: s for s in statuses}  # the newest status per context wins
        states = [s["state"] for s in latest.values()]
        if not states:
            overall = "pending"
        elif any(s in ("error", "failure") for s in states):
            overall = "failure"
        elif all(s == "success" for s in states):
            overall = "success"
        else:
            overall = "pending"
        data = {
            "state": overall,
            "sha": sha,
            "total_count": len(latest),
            "statuses": list(latest.values()),
            "repository": self.urls.minimal_repo(repo),
            "commit_url": f"{self.urls.api}/repos/{repo.full_name}/commits/{sha}",
            "url": f"{self.urls.api}/repos/{repo.full_name}/commits/{sha}/status",
        }
        return 200, {}, data

    def create_status(self, who, owner, name, sha, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        if body.get("state") not in ("error", "failure", "pending", "success"):
            raise HttpError(
                422,
                "Validation Failed",
                [{"resource": "Status", "field": "state", "code": "custom", "message": "state is invalid"}],
            )
        status_id = self.state.new_id()
        now = iso(self.state.clock())
        status = {
            "url": f"{self.urls.api}/repos/{repo.full_name}/statuses/{sha}",
            "avatar_url": None,
            "id": status_id,
            "node_id": f"SC_{status_id}",
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context", "default"),
            "created_at": now,
            "updated_at": now,
            "creator": self.urls.user(who.login),
        }
        with self.state.lock:
            repo.statuses.setdefault(sha, []).append(status)
        return 201, {}, status

    def list_check_runs(self, who, owner, name, ref, *, query, body) -> Answer:
        repo = self.repo(who, owner, name)
        sha = self.state.branch_sha(repo, ref) or ref
        runs = repo.check_runs.get(sha, [])
        if query.get("filter", ["latest"])[0] == "latest":  # GitHub's default: the newest run per name
            runs = list({run["name"]: run for run in runs}.values())
        return 200, {}, {"total_count": len(runs), "check_runs": list(reversed(runs))}

    # -- GraphQL: only the mutation PyGithub uses to take a PR out of draft -------------------------
    def graphql(self, who: Identity, body: dict) -> Answer:
        query = str(body.get("query", ""))
        if "markPullRequestReadyForReview" not in query:
            return 200, {}, {"errors": [{"message": "unsupported query in the GitHub double"}]}
        if not who.can_write("pull_requests"):
            by = "integration" if who.kind == "installation" else "personal access token"
            error = {"type": "FORBIDDEN", "message": f"Resource not accessible by {by}"}
            return 200, {}, {"data": {"markPullRequestReadyForReview": None}, "errors": [error]}
        node_id = (body.get("variables") or {}).get("input", {}).get("pullRequestId", "")
        with self.state.lock:
            for repo in self.state.repos.values():
                for pr in repo.pulls.values():
                    if f"PR_{pr.id}" == node_id and who.can_access(repo.full_name):
                        pr.draft, pr.updated_at = False, self.state.clock()
                        result = {"clientMutationId": None, "pullRequest": {"isDraft": False}}
                        return 200, {}, {"data": {"markPullRequestReadyForReview": result}}
        return 200, {}, {"errors": [{"type": "NOT_FOUND", "message": f"Could not resolve node {node_id}"}]}
