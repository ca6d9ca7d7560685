"""autoresearch.toml: defaults, the round trip through tomli-w, and errors that name the file and line."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from autoresearch.runner.agents.base import AgentSettings
from autoresearch.runner.config import (
    REDACTED,
    Caps,
    Config,
    KeepRule,
    NotifyConfig,
    default_config_toml,
    dump_config,
    load_config,
    parse_config,
    recordable_config,
)
from autoresearch.runner.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "autoresearch.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'autoresearch.toml'}: ")
    return message.split(": ", 1)[1]


def test_an_empty_file_is_all_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config == Config()
    assert (config.source, config.flavor, config.policy, config.time_budget_s, config.gpus) == (
        "auto", "auto", "default", None, [])
    assert config.agent == AgentSettings() and config.agent.name == "sweep"
    assert config.keep == KeepRule(threshold=0.0005, noise_multiplier=2.0)
    assert config.caps == Caps(max_experiments=None, max_hours=None, max_usd=20.0)


def test_the_default_template_reads_back_as_the_defaults(tmp_path):
    text = default_config_toml()
    assert text.startswith("# ")
    assert "[agent]" in text and 'name = "sweep"' in text and "max_usd = 20.0" in text
    assert "\nbase_url" not in text  # unset by default: left out
    assert load_config(write(tmp_path, text)) == Config()


def test_every_setting_round_trips(tmp_path):
    config = Config(
        source="web", flavor="cuda", policy="policies/mine.toml", time_budget_s=90.0, gpus=["GPU-abc", "1"],
        agent=replace(AgentSettings(), name="claude", model="claude-opus-4-1", max_tokens=8000, timeout_s=30.0,
                      base_url="http://localhost:8080", replay_file="edits.jsonl"),
        keep=KeepRule(threshold=0.001, noise_multiplier=3.0),
        caps=Caps(max_experiments=50, max_hours=8.0, max_usd=None, target_val_bpb=0.98, patience=20),
        notify=NotifyConfig(urls=("ntfy://topic", "json://127.0.0.1:8000/hook"), events=("best", "end"),
                            failures_in_a_row=5, spend_fraction=0.5),
    )
    text = dump_config(config)
    assert "max_usd = false" in text  # None where the default is a cap
    assert load_config(write(tmp_path, text)) == config


def test_hand_written_values_are_normalised(tmp_path):
    config = load_config(write(tmp_path, """
[budget]
seconds = 60
[gpus]
ids = [0, "GPU-1234"]
[caps]
max_usd = false
max_experiments = 10
"""))
    assert config.time_budget_s == 60.0 and isinstance(config.time_budget_s, float)
    assert config.gpus == ["0", "GPU-1234"]
    assert config.caps == Caps(max_experiments=10, max_hours=None, max_usd=None)


def test_a_syntax_error_names_the_line(tmp_path):
    message = error_of(tmp_path, '[task]\nsource = "offline"\n\n[agent]\nname = \n')
    assert re.fullmatch(r"line 5: not valid TOML: .+ \(column \d+\)", message), message


def test_an_unknown_key_names_its_line_and_the_known_keys(tmp_path):
    text = '[task]\nsource = "offline"\n\n[agent]\nname = "sweep"\n# a comment\nmodle = "x"\n'
    message = error_of(tmp_path, text)
    assert message.startswith("line 7: unknown key 'modle' in [agent] (known: name, model, ")


def test_an_unknown_section_names_its_line(tmp_path):
    assert error_of(tmp_path, '[task]\nsource = "web"\n[agnet]\nname = "claude"\n').startswith(
        "line 3: unknown section [agnet] (known: task, image, policy, budget, gpus, sandbox, agent, keep, caps, "
        "executor, cluster, notify)")
    assert error_of(tmp_path, '# settings\nsource = "web"\n').startswith(
        "line 2: unknown key 'source' outside any section")
    assert error_of(tmp_path, '\nagent = "claude"\n') == 'line 2: [agent] must be a table, got "claude"'


def test_a_wrong_type_names_the_setting_and_the_value(tmp_path):
    assert error_of(tmp_path, '[caps]\nmax_hours = 2\nmax_usd = "ten"\n') == (
        'line 3: [caps] max_usd must be a number or false, got "ten"')
    assert error_of(tmp_path, "[agent]\nmax_turns = 2.5\n") == "line 2: [agent] max_turns must be an integer, got 2.5"
    assert error_of(tmp_path, "[agent]\nmax_tokens = true\n") == (
        "line 2: [agent] max_tokens must be an integer, got true")
    assert error_of(tmp_path, "[policy]\nfile = 3\n") == "line 2: [policy] file must be a string, got 3"
    assert error_of(tmp_path, '[gpus]\nids = "0"\n') == (
        'line 2: [gpus] ids must be \"all\" or a list of GPU UUIDs or indexes, got "0"')


def test_bad_choices_and_ranges_are_refused(tmp_path):
    assert error_of(tmp_path, '[image]\nflavor = "gpu"\n') == (
        'line 2: [image] flavor must be one of auto, cpu, cuda, got "gpu"')
    assert error_of(tmp_path, '[task]\nsource = "s3"\n') == (
        'line 2: [task] source must be one of auto, offline, web, got "s3"')
    assert error_of(tmp_path, '[agent]\nname = "gpt"\n') == (
        'line 2: [agent] name must be one of claude, openai, claude-code, codex, sweep, replay, got "gpt"')
    assert error_of(tmp_path, "[budget]\nseconds = 0\n") == "line 2: [budget] seconds must be greater than 0, got 0"
    assert error_of(tmp_path, "[caps]\nmax_usd = -1\n") == "line 2: [caps] max_usd must be 0 or more, got -1"
    assert error_of(tmp_path, "[keep]\nthreshold = -0.1\n") == "line 2: [keep] threshold must be 0 or more, got -0.1"
    assert error_of(tmp_path, "[caps]\ntarget_val_bpb = 0\n") == (
        "line 2: [caps] target_val_bpb must be greater than 0, got 0")
    assert error_of(tmp_path, "[caps]\npatience = -3\n") == "line 2: [caps] patience must be greater than 0, got -3"
    assert error_of(tmp_path, "[notify]\nspend_fraction = 80\n") == (
        "line 2: [notify] spend_fraction must be at most 1, got 80")
    assert error_of(tmp_path, '[notify]\nevents = ["best", "crash"]\n') == (
        'line 2: [notify] events[1] must be one of best, end, stalled, failures, spend, got "crash"')


def test_notify_urls_must_be_a_list_of_strings_and_an_error_never_quotes_them(tmp_path):
    for text in ('[notify]\nurls = "json://u:SECRET@host/"\n', '[notify]\nurls = ["json://u:SECRET@host/", 3]\n',
                 '[notify]\nurls = [""]\n'):
        assert error_of(tmp_path, text) == "line 2: [notify] urls must be a list of non-empty strings"


def test_a_run_records_the_config_with_its_notify_urls_redacted():
    plain = '# mine\n[caps]\nmax_usd = 5\n'
    assert recordable_config(plain) == plain  # as written when it holds no URL
    recorded = recordable_config('[notify]\nurls = ["json://user:SECRETPASS@127.0.0.1:9/TOKENPATH", '
                                 '"ntfy://topic-SECRET"]\n[caps]\npatience = 4\n')
    assert "SECRET" not in recorded and "TOKENPATH" not in recorded
    config = parse_config(recorded)
    assert (config.notify.urls, config.caps.patience) == ((REDACTED, REDACTED), 4)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read the config"):
        load_config(tmp_path / "autoresearch.toml")
