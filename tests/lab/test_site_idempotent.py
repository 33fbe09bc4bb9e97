"""A second site.yml run over the running lab changes nothing."""

from __future__ import annotations

import os
import re

from .conftest import Playbook, recap


def test_a_second_site_run_changes_nothing(playbook: Playbook) -> None:
    tags = os.environ.get("QUEUESVC_SITE_TAGS", "")
    output = playbook("site.yml", *(["--tags", tags] if tags else []))
    summary = recap(output)
    print(summary)
    changed = [line for line in summary.splitlines() if re.search(r"changed=[1-9]", line)]
    assert not changed, f"site.yml changed something on its second run:\n{output[-6000:]}"
