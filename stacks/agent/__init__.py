"""The in-swarm agent: keeps the cluster file's stacks equal to a git branch (decide.py: its
decisions; loop.py: the loop in its service task; service.py: install, status, remove)."""
