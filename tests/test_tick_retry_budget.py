"""A sensor tick's GitHub reads (backlogs, open PRs, the PR lifecycle) have a short retry budget: a
secondary rate limit gives up at once (no minute-long wait), that target is skipped this tick with
one log line and read again at the next, and the other targets proceed. The worker keeps waiting
limits out as GitHub asks (test_github_rate_limits.py)."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import dagster as dg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble, secondary_rate_limit, server_error
from support import Project, backlog_yaml, docs_task
from test_github_forge import TOKEN_ENV, target_for
from test_github_rate_limits import FakeClock

from leviathan_dagster.core.errors import TransientError
from leviathan_dagster.core.forge.github.errors import TICK_MAX_SLEEP_SECONDS, TICK_RETRY
from leviathan_dagster.core.forge.github.forge import GithubForge
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.forge.tick_budget import tick_reads
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.defs.attempts.pr_sensors import pr_lifecycle_sensor
from leviathan_dagster.defs.backlogs.sensors import backlog_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource

KEY_ENV = "LEVIATHAN_TICK_TEST_APP_KEY"


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        for name in ("a", "b"):
            double.add_repo("acme", name, {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"))})
        yield double


def tick_forge(gh: GithubDouble, clock: FakeClock) -> GithubForge:
    token = "ghp_" + secrets.token_hex(18)
    gh.add_token(token)
    policy = dataclasses.replace(TICK_RETRY, sleep=clock.sleep, clock=clock)
    return GithubForge(
        target_for(gh), {TOKEN_ENV: token}, retry=policy, seconds_between_writes=0, seconds_between_requests=0
    )


@pytest.fixture
def site(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"})
        yield double


@pytest.mark.parametrize("retry_after", [None, 90])
def test_a_secondary_limit_at_tick_time_gives_up_at_once(site, retry_after) -> None:
    clock = FakeClock()
    forge = tick_forge(site, clock)
    fault = secondary_rate_limit("GET", r"/pulls$", retry_after=retry_after, times=5)
    site.faults.add(fault)
    with pytest.raises(TransientError, match="secondary rate limit"):
        forge.list_pull_requests("open")
    assert clock.sleeps == [] and fault.fired == 1  # asked once, never waited


def test_server_errors_at_tick_time_are_retried_within_a_few_seconds(site) -> None:
    clock = FakeClock()
    forge = tick_forge(site, clock)
    site.faults.add(server_error("GET", r"/pulls$", times=2))
    assert forge.list_pull_requests("open") == []
    assert len(clock.sleeps) == 2 and sum(clock.sleeps) <= TICK_MAX_SLEEP_SECONDS
    site.faults.add(server_error("GET", r"/pulls$", times=50))
    clock.sleeps.clear()
    with pytest.raises(TransientError, match="502"):
        forge.list_pull_requests("open")
    assert sum(clock.sleeps) <= TICK_MAX_SLEEP_SECONDS


def test_only_forges_built_for_a_tick_get_the_tick_budget(site) -> None:
    target = target_for(site)
    home = LeviathanHome(Path("/nonexistent"))
    environ = {TOKEN_ENV: "ghp_" + "0" * 36}
    with tick_reads():
        assert forge_for(target, home, environ)._retry is TICK_RETRY
    assert forge_for(target, home, environ)._retry.wait_out_secondary is True


def github_project(gh: GithubDouble, root: Path, monkeypatch) -> Project:
    """Two GitHub targets: ``a`` authenticates as a GitHub App (its backlog read exchanges an
    installation token through the API), ``b`` with a token."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gh.add_app(4242, public, {7: {"acme/a"}})
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token = "ghp_" + secrets.token_hex(18)
    gh.add_token(token)
    monkeypatch.setenv(KEY_ENV, pem)
    monkeypatch.setenv(TOKEN_ENV, token)
    targets = [
        {
            "id": "a",
            "repo_url": gh.repo_url("acme", "a"),
            "forge": "github",
            "github": {"api_url": gh.api_url, "app_id": 4242, "installation_id": 7},
            "secrets": {"github_app_private_key": {"env": KEY_ENV}},
        },
        {
            "id": "b",
            "repo_url": gh.repo_url("acme", "b"),
            "forge": "github",
            # Its PR sync lists the open PRs (drafts to promote) on every tick.
            "github": {"api_url": gh.api_url, "draft_until_green": True},
            "secrets": {"github_token": {"env": TOKEN_ENV}},
        },
    ]
    root.mkdir()
    config = root / "leviathan.yaml"
    config.write_text(yaml.safe_dump({"targets": targets}, sort_keys=False), encoding="utf-8")
    return Project(root=root, home=LeviathanHome(root / "home"), config_path=config)


def sensor_tick(project: Project, instance, sensor, cursor=None):
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}, cursor=cursor
    )
    return sensor(context)


def served(result) -> set[str]:
    """The targets a tick read: the backlog sensor's run requests, the PR sensor's summary parts."""
    if isinstance(result, dg.SensorResult) and result.skip_reason is None:
        return {request.partition_key for request in result.run_requests}
    skip = result.skip_reason if isinstance(result, dg.SensorResult) else result
    message = skip.skip_message if isinstance(skip, dg.SkipReason) else str(skip)
    parts = message.split("; ")
    return {part.split(":")[0] for part in parts if "skipped this tick" not in part}


@pytest.mark.parametrize(
    ("sensor", "method", "path", "skipped", "what"),
    [
        # a's backlog read exchanges an installation token; b lists its open PRs for draft promotion.
        (backlog_sensor, "POST", r"/app/installations/7/access_tokens$", "a", "backlog"),
        (pr_lifecycle_sensor, "GET", r"/repos/acme/b/pulls$", "b", "PRs"),
    ],
)
def test_a_sensor_skips_a_rate_limited_target_this_tick_and_reads_it_the_next(
    gh, tmp_path, monkeypatch, capfd, sensor, method, path, skipped, what
) -> None:
    project = github_project(gh, tmp_path / "p", monkeypatch)
    fault = secondary_rate_limit(method, path, times=1)
    gh.faults.add(fault)
    with dg.instance_for_test() as instance:
        first = sensor_tick(project, instance, sensor)
        assert served(first) == {"a", "b"} - {skipped}  # the other target proceeds
        assert fault.fired == 1  # asked once: no wait of a minute inside the tick
        [line] = [line for line in capfd.readouterr().err.splitlines() if f"target '{skipped}'" in line]
        assert f"{what} skipped this tick, read again next tick" in line and "secondary rate limit" in line
        cursor = getattr(first, "cursor", None)
        assert skipped in served(sensor_tick(project, instance, sensor, cursor))
