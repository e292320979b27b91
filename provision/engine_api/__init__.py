"""The Docker Engine API: the one transport (the SDK over an SSH-forwarded socket), the one
adapter (EngineAPI), cluster access with host-key pinning, and the cluster record kept in the
swarm. Imports base/, remote/ and hosts/."""
