"""The one place that talks to the Engine API (plan, apply, watch, the stack lock, status, the
cluster record, audit, rollback, image check), through a docker.APIClient (or any object with
the same methods: tests use a fake).  Errors are translated here: they name the manager and the
call and keep the HTTP status (is_conflict: 409, is_not_found: 404).

Lists use APIClient's own methods; creates and updates post the spec dicts
from stacks/specs/convert.py as they are (`_request`, through the client's public
requests interface), so what is sent is exactly what the plan showed: docker-py's
create_service/create_secret would rebuild the bodies and drop fields
(Templating, Runtime config references).  Creates and updates of services
carry the image's registry credentials in X-Registry-Auth when there are any
(provision/engine_api/registry_auth.py), as `docker stack deploy --with-registry-auth`;
swarm hands them to the nodes that pull.  Digests come from the manager's
daemon (distribution inspect), with the same credentials and the daemon's own
insecure-registries list.
"""
from __future__ import annotations

# the one conflict / not-found test, for every caller of this adapter (status kept in its errors)
from ..base.errors import (SwarmsmithError, is_conflict, is_not_found,  # noqa: F401
                              is_out_of_sequence, status_of)
from dataclasses import dataclass, field


# the pinned key of versioned secret names (see EngineAPI.secret_naming_key)
NAMING_KEY_CONFIG = "swarmsmith-secret-names-key"
NAMING_KEY_LABEL = "com.swarmsmith.secret-names-key"


@dataclass
class Current:
    """The live state, as APIClient returns it: services() (all of them, for name
    clashes), networks(), secrets(), configs()."""
    services: list = field(default_factory=list)
    networks: list = field(default_factory=list)
    secrets: list = field(default_factory=list)
    configs: list = field(default_factory=list)


def connect_local(socket_path: str | None = None, credentials=None) -> "EngineAPI":
    """The Engine API of the engine whose socket is mounted here (a service task on a manager,
    as the agent runs): the same adapter as access.connect()'s, another transport."""
    from .transport import LOCAL_SOCKET, local_api_client
    client = local_api_client(socket_path or LOCAL_SOCKET)
    return EngineAPI(client, credentials=credentials, where=client.host)


def as_engine(api, where: str = "") -> "EngineAPI":
    """`api` itself when it already is an EngineAPI, else the adapter around that client (a
    docker.APIClient, the guarded client, or a test's fake with the same methods)."""
    return api if isinstance(api, EngineAPI) else EngineAPI(api, where=where)


def change_node(engine, node_id: str, change, *, node: dict | None = None, sleep=None,
                attempts: int = 5) -> bool:
    """Update a node's spec to `change(spec)` (None: nothing to change) through `engine` (an
    EngineAPI, or anything with its node() and update_node()); False when there was nothing
    to change. A node updates its own record now and then (status, certificates, just after
    a join or a restart), and swarm refuses an update made against the version from before
    that: the node is read again and the change redone. `node`: the node as already read."""
    import time
    sleep = sleep or time.sleep
    for attempt in range(1, attempts + 1):
        if node is None or attempt > 1:
            node = engine.node(node_id)
        spec = change(dict(node.get("Spec") or {}))
        if spec is None:
            return False
        try:
            engine.update_node(node_id, node["Version"]["Index"], spec)
            return True
        except SwarmsmithError as exc:
            if not is_out_of_sequence(exc) or attempt == attempts:
                raise
        sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def _filters(filters: dict | None) -> dict:
    # clients and fakes that take no filters are called without them
    return {"filters": filters} if filters is not None else {}


def _status_error(where: str, what: str, resp) -> SwarmsmithError:
    """An error answer as EngineAPIError: the daemon's message, the HTTP status kept (409 is a
    conflict, 404 not found, 401/403 a registry refusal)."""
    from .transport import EngineAPIError
    try:
        message = (resp.json() or {}).get("message") or ""
    except ValueError:
        message = ""
    message = message or (getattr(resp, "text", "") or "").strip()[:300] or "no message"
    detail = f"{message} (HTTP {resp.status_code})"
    err = EngineAPIError(f"Engine API {what}: {detail}", host=where or None,
                         status_code=resp.status_code)
    err.detail = detail
    return err


def schedulable(nodes: list[dict]) -> int:
    """How many of `nodes` (a node listing) can take tasks now: ready and active."""
    return sum(1 for n in nodes
               if (n.get("Status") or {}).get("State") == "ready"
               and (n.get("Spec") or {}).get("Availability", "active") == "active")


class EngineAPI:
    def __init__(self, api, credentials=None, where: str = "", *, cluster_file: str = "",
                 node_images=None):
        self.api = api
        self.credentials = credentials     # provision.engine_api.registry_auth.Credentials or None
        self.where = where                 # the manager spoken to, named in errors
        self.cluster_file = cluster_file   # set by access.connect(): the nodes can be asked over SSH
        # nodes -> {node id: set of images}, for the pre-deploy image check; None: over SSH
        # when cluster_file is known, else no check (an engine a caller handed in)
        self.node_images = node_images

    def auth_headers(self, image: str) -> dict:
        header = self.credentials.header(image) if self.credentials and image else None
        return {"X-Registry-Auth": header} if header else {}

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SwarmsmithError as exc:
            if getattr(exc, "detail", None):    # from provision/engine_api/sessions.py's GuardedAPI
                exc.message = f"Engine API {what}: {exc.detail}"
            raise
        except Exception as exc:  # docker.errors.APIError and transport errors
            from .transport import EngineAPIError
            explanation = getattr(exc, "explanation", None) or str(exc)
            raise EngineAPIError(f"{what}: {explanation}", host=self.where or None,
                                 status_code=status_of(exc)) from exc

    def _request(self, what: str, method: str, path: str, *args, body: dict | None = None,
                 params: dict | None = None, headers: dict | None = None) -> dict:
        """One Engine API call with the body sent as it is (docker-py's create_service and
        friends rebuild bodies and drop fields), through the client's public requests
        interface; an error status becomes a SwarmsmithError naming the call (status kept)."""
        from urllib.parse import quote

        if isinstance(body, dict):      # as docker-py sends JSON: no top-level nulls
            body = {k: v for k, v in body.items() if v is not None}

        def go():
            url = (f"{self.api.base_url}/v{self.api.api_version}"
                   + path.format(*(quote(str(a), safe="/:") for a in args)))
            resp = self.api.request(method, url, json=body, params=params,
                                    headers=headers or None,
                                    timeout=getattr(self.api, "timeout", None))
            if resp.status_code >= 400:
                raise _status_error(self.where, what, resp)
            if not resp.content:    # secret and config updates answer an empty body
                return {}
            return resp.json() or {}
        return self._call(what, go)

    def _post(self, what: str, path: str, body: dict, params: dict | None = None,
              *args, headers: dict | None = None) -> dict:
        return self._request(what, "POST", path, *args, body=body, params=params,
                             headers=headers)

    # --- reading ----------------------------------------------------------------------
    def current(self) -> Current:
        """The four listings at once (one round trip to the manager instead of four in a row)."""
        from concurrent.futures import ThreadPoolExecutor
        kinds = ("services", "networks", "secrets", "configs")
        with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
            futures = {k: pool.submit(self._call, f"list {k}", lambda k=k: getattr(self.api, k)())
                       for k in kinds}
        return Current(**{k: f.result() for k, f in futures.items()})   # first failure first

    def secret_naming_key(self) -> bytes:
        """The key of the keyed hash in versioned secret names (stacks/specs/convert.py).

        Derived from the swarm's manager join token, so every runner of this cluster gets the
        same key with no state of its own, and a name in a CI log cannot be checked against
        guessed secret contents without that token. Rotating the manager token would change
        it, so `swarmsmith tokens rotate` first pins today's key in a swarm config (readable
        only with the manager access that can read the secrets themselves); once pinned, that
        key is used. Reading it changes nothing, so plans stay read-only."""
        return self._pinned_naming_key() or self._token_naming_key()

    def pin_secret_naming_key(self) -> bool:
        """Keep the key versioned secret names use today, before the manager token rotates.
        True when it was pinned now, False when it already was."""
        import base64
        if self._pinned_naming_key():
            return False
        spec = {"Name": NAMING_KEY_CONFIG, "Labels": {NAMING_KEY_LABEL: "1"},
                "Data": base64.b64encode(self._token_naming_key()).decode()}
        try:
            self._post(f"create config {NAMING_KEY_CONFIG}", "/configs/create", spec)
        except SwarmsmithError as exc:
            if is_conflict(exc) and self._pinned_naming_key():   # another run pinned it first
                return False
            raise
        return True

    def _pinned_naming_key(self) -> bytes | None:
        import base64
        for c in self.configs({"name": NAMING_KEY_CONFIG}) or []:
            spec = c.get("Spec") or {}
            if spec.get("Name") == NAMING_KEY_CONFIG and spec.get("Data"):
                return base64.b64decode(spec["Data"])
        return None

    def _token_naming_key(self) -> bytes:
        import hashlib
        import hmac
        swarm = self._call("inspect the swarm", self.api.inspect_swarm)
        token = ((swarm or {}).get("JoinTokens") or {}).get("Manager") or ""
        if not token:
            raise SwarmsmithError("inspect the swarm: no manager join token in the answer "
                                  "(is this node a manager?)")
        return hmac.new(token.encode(), b"swarmsmith secret names v1\0" +
                        str(swarm.get("ID", "")).encode(), hashlib.sha256).digest()

    # --- writing ----------------------------------------------------------------------
    def create_network(self, spec: dict) -> str:
        body = {**spec, "CheckDuplicate": True}
        return self._post(f"create network {spec['Name']}", "/networks/create", body)["Id"]

    def create_secret(self, spec: dict) -> str:
        return self._post(f"create secret {spec['Name']}", "/secrets/create", spec)["ID"]

    def update_secret(self, id_: str, version: int, spec: dict) -> None:
        self._post(f"update secret {spec['Name']}", "/secrets/{0}/update", spec,
                   {"version": version}, id_)

    def create_config(self, spec: dict) -> str:
        return self._post(f"create config {spec['Name']}", "/configs/create", spec)["ID"]

    def update_config(self, id_: str, version: int, spec: dict) -> None:
        self._post(f"update config {spec['Name']}", "/configs/{0}/update", spec,
                   {"version": version}, id_)

    def create_service(self, spec: dict) -> str:
        return self._post(f"create service {spec['Name']}", "/services/create", spec,
                          headers=self.auth_headers(_image(spec)))["ID"]

    def update_service(self, id_: str, version: int, spec: dict) -> list:
        out = self._post(f"update service {spec['Name']}", "/services/{0}/update", spec,
                         {"version": version}, id_, headers=self.auth_headers(_image(spec)))
        return out.get("Warnings") or []

    def rollback_service(self, service: dict, headers: dict | None = None) -> dict:
        """Roll a service back to its PreviousSpec the way the docker CLI asks for it: the
        current spec posted with `rollback=previous`; retried once if its version moved."""
        name = service["Spec"]["Name"]
        for attempt in (1, 2):
            try:
                return self._post(f"roll back service {name}", "/services/{0}/update",
                                  service["Spec"], {"version": service["Version"]["Index"],
                                                    "rollback": "previous"},
                                  service["ID"], headers=headers)
            except SwarmsmithError as exc:
                if attempt == 1 and is_out_of_sequence(exc):
                    service = self._call(f"inspect service {name}", self.api.inspect_service,
                                         service["ID"])
                    continue
                raise SwarmsmithError(f"rollback of {name} refused: {exc.message}",
                                      host=exc.host) from exc
        raise AssertionError("unreachable")

    def distribution_digest(self, image: str) -> str:
        """The manifest digest behind `image` in its registry now, as the manager's daemon
        sees it (GET /distribution/NAME/json). Raises RegistryAccessError (refused: 401/403)
        or SwarmsmithError (anything else)."""
        headers = self.auth_headers(image)     # a missing password is bad input: raised here

        try:
            out = self._request(f"inspect the distribution of {image}", "GET",
                                "/distribution/{0}/json", image, headers=headers)
        except Exception as exc:
            text = (getattr(exc, "detail", None) or getattr(exc, "explanation", None)
                    or str(exc))
            status = getattr(exc, "status_code", None) or \
                getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403) or any(w in text.lower() for w in (
                    "unauthorized", "authentication required", "denied", "no basic auth")):
                hint = self.credentials.explain_refusal(image) if self.credentials else ""
                raise RegistryAccessError(image, text, hint) from None
            raise SwarmsmithError(f"image {image}: the manager could not ask its registry: "
                                  f"{text}") from None
        digest = ((out or {}).get("Descriptor") or {}).get("digest", "")
        if not digest.startswith("sha256:"):
            raise SwarmsmithError(f"image {image}: the registry gave no digest")
        return digest

    def remove(self, kind: str, id_: str, name: str) -> None:
        fn = {"service": self.api.remove_service, "network": self.api.remove_network,
              "secret": self.api.remove_secret, "config": self.api.remove_config}[kind]
        self._call(f"remove {kind} {name}", fn, id_)

    # --- day two: nodes, tasks, logs, swarm settings ------------------------------------
    def nodes(self) -> list[dict]:
        return self._call("list nodes", self.api.nodes)

    def node(self, node_id: str) -> dict:
        return self._call(f"inspect node {node_id[:12]}", self.api.inspect_node, node_id)

    def services(self, filters: dict | None = None) -> list[dict]:
        return self._call("list services", self.api.services, **_filters(filters))

    def service(self, service_id: str) -> dict:
        return self._call(f"inspect service {service_id}", self.api.inspect_service, service_id)

    def tasks(self, filters: dict | None = None) -> list[dict]:
        return self._call("list tasks", self.api.tasks, **_filters(filters))

    def secrets(self) -> list[dict]:
        return self._call("list secrets", self.api.secrets)

    def configs(self, filters: dict | None = None) -> list[dict]:
        return self._call("list configs", self.api.configs, **_filters(filters))

    def config(self, config_id: str) -> dict:
        return self._call(f"inspect config {config_id[:12]}", self.api.inspect_config,
                          config_id)

    def add_config(self, name: str, data: bytes, labels: dict) -> str:
        """A small config of our own (a lock, a record, an audit entry), through the SDK's
        create_config; its id. A taken name raises an error is_conflict() recognises."""
        return self._call(f"create config {name}", self.api.create_config, name, data,
                          labels=labels)["ID"]

    def remove_config(self, config_id: str, name: str = "") -> None:
        self._call(f"remove config {name or config_id[:12]}", self.api.remove_config,
                   config_id)

    def swarm(self) -> dict:
        return self._call("inspect the swarm", self.api.inspect_swarm)

    def own_node_id(self) -> str:
        """The swarm node ID of the engine this client talks to ("" outside a swarm): as read
        when the client was connected to a manager, else from the engine's info."""
        known = getattr(self.api, "node_id", "")
        if isinstance(known, str) and known:
            return known
        info = self._call("read the engine's info", self.api.info) or {}
        return (info.get("Swarm") or {}).get("NodeID", "")

    def local_images(self) -> list[dict]:
        """The images on this engine's own host, as GET /images/json lists them."""
        return self._call("list images", self.api.images)

    def service_logs(self, service_id: str, **kwargs):
        """Raw log stream (bytes chunks) of a service; kwargs as docker.APIClient.service_logs."""
        return self._call(f"logs of {service_id}", self.api.service_logs, service_id, **kwargs)

    def unlock_key(self) -> str:
        out = self._call("read the unlock key", self.api.get_unlock_key) or {}
        return out.get("UnlockKey", "")

    def update_node(self, node_id: str, version: int, spec: dict) -> None:
        self._call(f"update node {node_id[:12]}", self.api.update_node, node_id, version, spec)

    def remove_node(self, node_id: str, force: bool = False) -> None:
        self._call(f"remove node {node_id[:12]}", self.api.remove_node, node_id, force=force)

    def update_swarm(self, *, spec: dict | None = None, rotate_worker_token: bool = False,
                     rotate_manager_token: bool = False, rotate_unlock_key: bool = False,
                     what: str = "update the swarm's settings") -> None:
        sw = self.swarm()
        self._call(what, self.api.update_swarm, sw["Version"]["Index"],
                   swarm_spec=spec if spec is not None else sw["Spec"],
                   rotate_worker_token=rotate_worker_token,
                   rotate_manager_token=rotate_manager_token,
                   rotate_manager_unlock_key=rotate_unlock_key)


def _image(spec: dict) -> str:
    return ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image") or ""


class RegistryAccessError(SwarmsmithError):
    """The registry refused the manager (no or wrong credentials)."""

    def __init__(self, image: str, detail: str, hint: str = ""):
        self.image = image
        super().__init__(hint or f"image {image}: the registry refused access "
                                 f"({detail.strip()[:120]})")
