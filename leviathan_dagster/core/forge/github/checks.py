"""When a draft_until_green draft may go ready: its head commit is green on GitHub."""

from __future__ import annotations

# Check run conclusions that count as passed (GitHub's own rule for required checks: neutral and
# skipped pass; failure, cancelled, timed_out, action_required, stale and startup_failure do not).
GREEN_CONCLUSIONS = ("success", "neutral", "skipped")


def commit_is_green(commit) -> bool:
    """Every check run on the PyGithub ``commit`` (GitHub Actions and other Apps report these) and
    every commit status (older integrations) passed, and at least one of them exists.

    The combined status alone is not enough: it is ``pending`` when there are no statuses at all,
    which is the normal case for a repository that only uses Actions.
    """
    runs = [(run.status, run.conclusion) for run in commit.get_check_runs()]
    combined = commit.get_combined_status()
    if not runs and combined.total_count == 0:
        return False  # nothing has reported yet: CI may not have started
    runs_green = all(status == "completed" and conclusion in GREEN_CONCLUSIONS for status, conclusion in runs)
    return runs_green and (combined.total_count == 0 or combined.state == "success")
