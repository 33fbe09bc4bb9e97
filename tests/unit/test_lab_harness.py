"""The lab harness's pure parts: the guard's rules, the molecule plan, the CI table."""

from __future__ import annotations

import pytest

from scripts.lab import ci, guard, molecule


def test_the_guard_drops_lab_traffic_except_to_the_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "mirror_addrs", lambda: ["198.51.100.7"])
    monkeypatch.setattr(guard, "molecule_bridge", lambda: "cni-podman9")
    rules = guard.ruleset()
    assert 'elements = { "queuesvc0", "lxcbr0", "cni-podman9" }' in rules
    assert "set mirror { type ipv4_addr; elements = { 198.51.100.7 } }" in rules
    forward = rules.split("chain forward")[1].split("chain output")[0]
    # The mirror is allowed before the catch-all drop of lab egress.
    assert forward.index('comment "package mirror"') < forward.index('comment "lab egress"')
    assert 'oifname != @lab_ifaces oifname != "lo" counter drop' in rules


def test_molecule_runs_every_scenario_for_test_the_longest_first() -> None:
    plan = molecule.scenarios([], None, "test")
    assert plan[:3] == ["app/default", "nginx/default", "mongodb/default"]
    assert "mongodb/official" in plan
    assert "rabbitmq/cluster" in plan
    assert molecule.scenarios(["mongodb"], None, "converge") == ["mongodb/default"]
    assert molecule.scenarios(["mongodb"], "official", "test") == ["mongodb/official"]


def test_molecule_refuses_a_role_without_scenarios() -> None:
    with pytest.raises(ci.LabError, match="has no molecule scenarios"):
        molecule.scenarios(["no-such-role"], None, "test")


def test_the_ci_table_counts_failed_stages(capsys: pytest.CaptureFixture[str]) -> None:
    run = ci.Run()

    def breaks() -> None:
        raise ci.LabError("no")

    assert run.stage("works", lambda: None)
    assert not run.stage("breaks", breaks)
    assert not run.report(3.0)
    out = capsys.readouterr().out
    assert "works    ok" in out
    assert "breaks   FAILED" in out
    assert "failed stages: breaks" in out
    assert out.strip().endswith("1 passed, 1 failed")
