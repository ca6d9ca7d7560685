"""`autoresearch doctor`: one line per check, the fix when it fails, exit 1 when the run cannot start."""

import dataclasses
import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from autoresearch.runner import doctor
from autoresearch.runner.agents.base import AgentSettings
from autoresearch.runner.init import init_workspace
from autoresearch.runner.record import store
from autoresearch.runner.sandbox import gpus
from autoresearch.runner.settings import resolve_settings
from autoresearch.runner.workspace import find_workspace
from tests.fake_nvml import FakeNvml
from tests.local_hub import local_hub


def autoresearch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    return find_workspace(init_workspace(tmp_path / "ws"))


def by_name(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"]}


@pytest.mark.docker
def test_a_machine_with_docker_and_the_image_is_ready(ws, cpu_image):
    done = autoresearch("doctor", "--json", "--flavor", "cpu", cwd=ws.root)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], done.stdout
    checks = by_name(report)
    assert checks["sandbox"]["status"] == "ok" and checks["sandbox"]["detail"].startswith("docker engine ")
    assert checks["image"]["detail"].startswith(f"{cpu_image} with torch 2.")
    assert checks["gpus"]["status"] == "skip" and checks["gpu in docker"]["status"] == "skip"
    assert checks["agent"]["detail"] == "sweep (offline, no key needed)"
    text = autoresearch("doctor", "--flavor", "cpu", cwd=ws.root).stdout
    assert text.splitlines()[0].startswith("✓ sandbox") and text.endswith("ready: the configured run can start\n")


def test_no_docker_engine_fails_with_the_fix_and_exit_1(ws, tmp_path):
    done = autoresearch("doctor", "--flavor", "cpu", cwd=ws.root, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("✗ sandbox") and "fix: start dockerd" in lines[1]
    assert any(line.startswith("– image") and "no Docker engine to ask" in line for line in lines)
    assert lines[-1] == "1 problem(s): the configured run cannot start (sandbox)"


def test_bad_input_is_one_line_and_exit_2(ws):
    (ws.root / "autoresearch.toml").write_text('[sandbox]\nprovider = "podman"\n')
    done = autoresearch("doctor", cwd=ws.root)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1


def test_the_claude_agent_without_a_key_cannot_start(ws, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = resolve_settings(ws)
    claude = dataclasses.replace(settings, config=dataclasses.replace(settings.config,
                                                                      agent=AgentSettings(name="claude")))
    check = doctor.check_agent(claude)
    assert (check.status, check.fix.split(",")[0]) == ("fail", "export ANTHROPIC_API_KEY=...")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert doctor.check_agent(claude).status == "ok"


@pytest.mark.parametrize(("free_gb", "status"), [(1.0, "fail"), (10.0, "warn"), (200.0, "ok")])
def test_free_disk_thresholds(tmp_path, monkeypatch, free_gb, status):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage(0, 0, free_gb * 1e9))
    check = doctor.disk_check("data cache", tmp_path)
    assert check.status == status and check.detail == f"{free_gb:.1f} GB free at {tmp_path}"


def test_the_web_corpus_check_asks_the_hub_and_fails_only_when_the_source_needs_it(ws, monkeypatch):
    web = dataclasses.replace(resolve_settings(ws), config=dataclasses.replace(resolve_settings(ws).config,
                                                                                 source="web"))
    with local_hub() as url:
        monkeypatch.setenv("AUTORESEARCH_WEB_PROBE_URL", url)
        assert doctor.check_web(web).status == "ok"
    assert doctor.check_web(web).status == "fail"  # nothing listens there any more
    auto = resolve_settings(ws)  # the default: the bundled corpus when the hub is away, which deserves a warning
    assert (auto.source, doctor.check_web(auto).status) == ("auto", "warn")
    offline = dataclasses.replace(auto, config=dataclasses.replace(auto.config, source="offline"))
    assert doctor.check_web(offline).status == "skip"  # the offline source does not need it


def test_an_older_store_asks_for_a_migration(ws):
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    store.open_store(ws.store_path).close()
    import sqlite3

    conn = sqlite3.connect(ws.store_path)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    check = doctor.check_store(ws)
    assert (check.status, check.fix) == ("fail", "autoresearch migrate")


def test_gpus_persistence_and_the_cuda_flavor_without_a_driver(ws, monkeypatch):
    fake = FakeNvml.recorded()
    fake.persistence = False
    monkeypatch.setattr(gpus, "pynvml", fake)
    cuda = dataclasses.replace(resolve_settings(ws), flavor="cuda")
    found = doctor.check_gpus(cuda)
    assert found.status == "ok"
    assert found.detail.startswith("driver 550.54.15, 2 GPU(s): 0: NVIDIA H100 80GB HBM3 80 GiB; 1:")
    persistence = doctor.check_persistence(cuda)
    assert persistence.status == "warn" and persistence.fix == "sudo nvidia-smi -pm 1"

    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise self.NVMLError(9)  # NVML_ERROR_DRIVER_NOT_LOADED

    monkeypatch.setattr(gpus, "pynvml", NoDriver({"gpus": []}))
    missing = doctor.check_gpus(cuda)
    assert missing.status == "fail" and "NVML sees none" in missing.detail
    assert doctor.check_gpus(dataclasses.replace(cuda, flavor="cpu")).status == "skip"
