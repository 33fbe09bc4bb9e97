"""The project's own tooling: the lab, CI and the local services (python3 -m scripts.lab)."""
