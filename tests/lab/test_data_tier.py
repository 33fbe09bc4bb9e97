"""The data tier answers the app servers with the app's credentials, and none
of its ports is reachable from lb1 (ansible/lab-check-data.yml)."""

from __future__ import annotations

from .conftest import Playbook, recap


def test_the_data_tier_answers_the_app_servers_and_no_one_else(playbook: Playbook) -> None:
    print(recap(playbook("ansible/lab-check-data.yml")))
