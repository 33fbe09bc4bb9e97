"""The lab on this machine, CI's stages and the local services, as one typed
command: `python3 -m scripts.lab --help`. Standard library only, so that it
runs before any virtualenv exists. One module per concern:

config     names and addresses of the lab (one place each)
sh         running commands, logs of long steps, apt, virtualenvs
guard      the nftables network guard
running    what of the lab runs now, and its memory
host       prepare this machine for the lab, and undo it
box        the Vagrant box and the podman images (debootstrap)
lab        vagrant up/down and the lab's pytest checks (tests/lab)
molecule   the roles' molecule scenarios, several at a time
services   RabbitMQ, Redis and the MongoDB emulator on loopback for the tests
demo       the tutorial's requests against the lab or a local service
wheelhouse the app's wheelhouse that the app role installs
ci         the whole test suite as stages, with a timing table
"""
