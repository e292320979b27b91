"""Hosts to a running swarm, by stage; each folder imports only the ones before it:

    base -> remote -> hosts -> engine_api -> engine -> swarm -> images

and the orchestrations on top (bootstrap: `up`/`down`; restore; upgrade: `engine upgrade`) may
use them all.
tests/test_import_graph_units.py keeps the order."""
