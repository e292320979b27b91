"""Reaching hosts: commands as data, SSH sessions, facts read before acting, parallel runs.
Imports only base/."""
