"""Run settings, resolved once: the precedence of flags, autoresearch.toml, the policy and the defaults."""

import pytest

from autoresearch.runner.check.policy import load_policy
from autoresearch.runner.errors import UserError
from autoresearch.runner.init import init_workspace
from autoresearch.runner.phases.sources import HUB_URL_ENV, gpu_corpus_warning, resolve_source, source_lines
from autoresearch.runner.sandbox import registry as providers
from autoresearch.runner.settings import Flags, device_of, resolve_settings, training_deadline_s
from autoresearch.runner.workspace import find_workspace
from tests.local_hub import local_hub


@pytest.fixture
def ws(tmp_path):
    return find_workspace(init_workspace(tmp_path / "ws"))


def set_config(ws, text: str) -> None:
    (ws.root / "autoresearch.toml").write_text(text)


def test_the_budget_is_the_policys_unless_the_config_or_a_flag_says_otherwise(ws):
    policy_budget = load_policy().limits.time_budget_s
    set_config(ws, "")
    assert resolve_settings(ws).time_budget_s == policy_budget
    set_config(ws, "[budget]\nseconds = 42\n")
    assert resolve_settings(ws).time_budget_s == 42
    settings = resolve_settings(ws, Flags(time_budget_s=7))
    assert settings.time_budget_s == 7
    assert settings.limits.time_budget_s == 7  # one name: what the experiment and the sandbox read


def test_the_strict_policy_named_in_the_config_brings_its_own_budget(ws):
    set_config(ws, '[policy]\nfile = "strict"\n')
    settings = resolve_settings(ws)
    assert settings.policy.name == "strict"
    assert settings.time_budget_s == load_policy(name="strict").limits.time_budget_s


def test_a_policy_flag_overrides_the_configs_policy(ws, tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "default"\n[limits]\ntime_budget_s = 11\n')
    set_config(ws, '[policy]\nfile = "strict"\n')
    settings = resolve_settings(ws, Flags(policy=mine))
    assert (settings.policy.name, settings.time_budget_s) == ("mine", 11)


def test_caps_flags_override_the_config_one_by_one(ws):
    set_config(ws, "[caps]\nmax_experiments = 5\nmax_hours = 2\n")
    caps = resolve_settings(ws, Flags(max_hours=0.5)).caps
    assert (caps.max_experiments, caps.max_hours) == (5, 0.5)


def test_flavor_and_sandbox_flags_override_the_config(ws):
    set_config(ws, '[image]\nflavor = "cpu"\n[sandbox]\nprovider = "process"\n')
    settings = resolve_settings(ws)
    assert (settings.flavor, settings.sandbox, settings.sandbox_insisted) == ("cpu", "process", False)
    settings = resolve_settings(ws, Flags(sandbox="docker"))
    assert (settings.sandbox, settings.sandbox_insisted) == ("docker", True)


def test_outside_a_workspace_the_config_defaults_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    settings = resolve_settings(find_workspace(tmp_path), Flags(flavor="cpu"))
    assert (settings.sandbox, settings.source, settings.flavor) == ("docker", "auto", "cpu")


@pytest.mark.parametrize("flags", [Flags(time_budget_s=0), Flags(max_experiments=-1), Flags(max_usd=0)])
def test_a_non_positive_flag_is_one_clear_error(ws, flags):
    with pytest.raises(UserError, match="must be positive"):
        resolve_settings(ws, flags)


def test_an_unknown_provider_in_the_config_names_the_line_and_the_choices(ws):
    set_config(ws, '[sandbox]\nprovider = "podman"\n')
    with pytest.raises(UserError, match=r"line 2: \[sandbox\] provider must be one of docker, process"):
        resolve_settings(ws)


def test_an_unknown_provider_by_name_says_what_to_do():
    with pytest.raises(UserError, match=r"unknown sandbox provider 'podman'.*one of docker, process"):
        providers.open_sandbox("podman")


def test_the_fake_provider_is_refused_outside_tests(monkeypatch):
    monkeypatch.delenv(providers.FAKE_SCRIPT_ENV, raising=False)
    with pytest.raises(UserError, match="for tests only"):
        providers.open_sandbox("fake")


def test_the_process_provider_is_refused_where_docker_answers_unless_insisted(monkeypatch):
    monkeypatch.setattr(providers, "_docker_answers", lambda: True)
    with pytest.raises(UserError, match=r"without isolation.*--sandbox process"):
        providers.open_sandbox("process")


def test_one_rule_picks_the_deadline_allowance_by_device():
    limits = load_policy().limits
    assert device_of(None) == "cpu" and device_of("GPU-1") == "gpu"
    assert training_deadline_s(limits, "cpu") == limits.time_budget_s + limits.deadline_allowance_cpu_s
    assert training_deadline_s(limits, "gpu") == limits.time_budget_s + limits.deadline_allowance_cuda_s


def test_auto_takes_the_web_corpus_when_its_hub_answers_and_the_offline_one_otherwise(monkeypatch):
    with local_hub() as url:
        monkeypatch.setenv(HUB_URL_ENV, url)
        assert resolve_source("auto")[0] == "web"
    source, why = resolve_source("auto")  # nothing listens there any more
    assert source == "offline" and why.startswith(f"auto: {url} does not answer")
    assert resolve_source("web") == ("web", "as configured")  # a named source is never second-guessed


def test_the_gpu_profile_on_the_offline_corpus_is_warned_about():
    warning = gpu_corpus_warning("offline", "cuda")
    assert warning.startswith("WARNING: the GPU profile trains on the offline corpus") and "\n" not in warning
    assert gpu_corpus_warning("web", "cuda") is None
    assert gpu_corpus_warning("offline", "cpu") is None
    assert source_lines("offline", "as configured", "cuda") == ["data: the offline corpus (as configured)", warning]
    assert source_lines("offline", "as configured", "cpu") == ["data: the offline corpus (as configured)"]
