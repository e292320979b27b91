"""Registry credentials for the swarm: what `docker stack deploy --with-registry-auth` sends.

For each image the registry host is taken from its name (Docker Hub when it names none) and
credentials are looked up, first match wins:
1. the cluster file's `registries: {HOST: {username, password_env | password_file}}`;
2. the Docker config of the user running swarmsmith ($DOCKER_CONFIG/config.json, else
   ~/.docker/config.json): `auths` entries, and credential helpers (`credHelpers`,
   `credsStore`), read through the docker SDK's auth module.

The password only ever lives in a `Secret` and in the X-Registry-Auth header sent to the
manager's Engine API (through the SSH tunnel): never in output, logs, process arguments,
the audit trail or the inventory. Messages name the registry and where the credentials came
from, nothing more.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from ..remote.command import Secret
from ..base.errors import InputError

DOCKER_HUB = "docker.io"


def registry_of(image: str) -> str:
    """The registry host an image reference names ("docker.io" when none)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


@dataclass(frozen=True)
class Credential:
    registry: str
    username: str
    password: Secret
    source: str                # "the cluster file (registries.HOST)", "~/.docker/config.json"

    def header(self) -> str:
        """The X-Registry-Auth value (base64url JSON, as the Docker CLI encodes it)."""
        body = {"username": self.username, "password": self.password.reveal(),
                "serveraddress": self.registry}
        return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()

    def __repr__(self) -> str:
        return f"Credential({self.registry!r}, {self.username!r}, ***, {self.source!r})"


def docker_config_path() -> str:
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"),
                        "config.json")


class Credentials:
    """Credentials per registry for one run (looked up once per registry)."""

    def __init__(self, registries: dict | None = None, cluster_path: str = "",
                 docker_config: str | None = None):
        self.registries = registries or {}
        self.cluster_path = cluster_path
        self.docker_config = docker_config or docker_config_path()
        self._cache: dict[str, Credential | None] = {}

    @classmethod
    def for_cluster(cls, cluster_path: str) -> "Credentials":
        from inventory.clusterfile import load
        return cls(load(cluster_path).registries, cluster_path)

    def lookup(self, registry: str) -> Credential | None:
        if registry not in self._cache:
            self._cache[registry] = self._from_cluster(registry) or self._from_docker(registry)
        return self._cache[registry]

    def for_image(self, image: str) -> Credential | None:
        return self.lookup(registry_of(image))

    def header(self, image: str) -> str | None:
        cred = self.for_image(image)
        return cred.header() if cred else None

    def _from_cluster(self, registry: str) -> Credential | None:
        entry = self.registries.get(registry)
        if not entry:
            return None
        where = f"registries.{registry}"
        if "password_env" in entry:
            var = entry["password_env"]
            value = os.environ.get(var)
            if not value:
                raise InputError(f"environment variable {var} (the password for {registry}) "
                                 "is not set", file=self.cluster_path or None,
                                 path=f"{where}.password_env")
        else:
            try:
                with open(entry["password_file"]) as f:
                    value = f.read().strip("\r\n")
            except OSError as e:
                raise InputError(f"cannot read the password file {entry['password_file']}: "
                                 f"{e.strerror}", file=self.cluster_path or None,
                                 path=f"{where}.password_file") from None
            if not value:
                raise InputError(f"the password file {entry['password_file']} is empty",
                                 file=self.cluster_path or None, path=f"{where}.password_file")
        return Credential(registry, entry["username"], Secret(value),
                          f"the cluster file ({where})")

    def _from_docker(self, registry: str) -> Credential | None:
        if not os.path.isfile(self.docker_config):
            return None
        from docker import auth
        try:
            cfg = auth.load_config(self.docker_config)
            found = cfg.resolve_authconfig(registry)
        except Exception as e:    # a broken helper or file: say which, not what it held
            raise InputError(f"cannot read credentials for {registry}: {type(e).__name__}",
                             file=self.docker_config) from None
        # keys come capitalised from credential helpers, lower-case from `auths` entries
        found = {str(k).lower(): v for k, v in (found or {}).items()}
        if not (found.get("username") or found.get("identitytoken")):
            return None
        # an identity token (OAuth refresh token) goes as the password with user <token>
        user = found.get("username") or "<token>"
        password = found.get("password") or found.get("identitytoken") or ""
        return Credential(registry, user, Secret(password), self.docker_config)

    def explain_refusal(self, image: str) -> str:
        """Why a registry refused `image`, and what to do, without any secret."""
        reg = registry_of(image)
        cred = self.lookup(reg)
        if cred is None:
            return (f"registry {reg} refused access to {image} and swarmsmith has no "
                    f"credentials for it: {self.how_to_provide(reg)}")
        return (f"registry {reg} refused the credentials for user {cred.username} from "
                f"{cred.source} for {image}; check them (`docker login {reg}` replaces those "
                "in the Docker config)")

    def how_to_provide(self, registry: str) -> str:
        where = self.cluster_path or "the cluster file"
        return (f"log in here with `docker login {registry}` (read from "
                f"{self.docker_config}), or add `registries: {{{registry}: {{username: USER, "
                f"password_env: VAR}}}}` to {where}")
