"""The fakes every test tier shares: one clock (clock.py), the Engine API's HTTP routes
(engine.py), a scripted swarm for the watch and the commands above it (swarm.py)."""
