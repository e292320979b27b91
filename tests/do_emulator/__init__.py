"""A DigitalOcean API v2 emulator on 127.0.0.1 for tests and the bench (see server.DOEmulator)."""
from .model import default_host_factory, key_fingerprint
from .server import DOEmulator, match_route

__all__ = ["DOEmulator", "default_host_factory", "key_fingerprint", "match_route"]
