"""The docker SDK on a cluster manager, through our own SSH session.

docker-py's ssh:// transport opens its own paramiko connection and reads ~/.ssh/known_hosts;
we want the inventory's pinned host key and one connection per host. So the SDK talks to a
private unix socket here, and each connection on it becomes an SSH channel running
`docker system dial-stdio` on the manager (what the Docker CLI does over ssh://).
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading

from .errors import HostKeyMismatchError, SwarmsmithError, UnreachableError
from .ssh import Session


DIR_PREFIX = "swarmsmith-docker-"


def remove_dead_forwarder_dirs(tmp: str | None = None, pid_alive=None) -> list[str]:
    """A run killed with SIGKILL never reaches atexit: its socket folder stays behind. The
    folder name carries the owner's pid; folders of pids that are gone (ours only) go."""
    tmp = tmp or tempfile.gettempdir()
    alive = pid_alive or _pid_alive
    removed = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(DIR_PREFIX):
            continue
        pid = name[len(DIR_PREFIX):].split("-", 1)[0]
        path = os.path.join(tmp, name)
        try:
            if not pid.isdigit() or alive(int(pid)) or os.stat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SocketForwarder:
    def __init__(self, session: Session):
        self.session = session
        remove_dead_forwarder_dirs()
        self.dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        os.chmod(self.dir, 0o700)
        self.path = os.path.join(self.dir, "docker.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(32)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            chan = self.session.transport.open_session()
            chan.exec_command("docker system dial-stdio")
        except Exception:
            conn.close()
            return

        def upstream():
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    chan.shutdown_write()
                except Exception:
                    pass

        threading.Thread(target=upstream, daemon=True).start()
        try:
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            # the SSH transport may already be gone (host down, run ending): nothing to tell it
            for closer in (chan.close, conn.close):
                try:
                    closer()
                except (OSError, EOFError):
                    pass

    def close(self) -> None:
        self.closed = True
        try:
            self.server.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def api_client(session: Session, timeout: int = 60) -> "GuardedAPI":
    import docker
    fwd = SocketForwarder(session)
    try:
        client = docker.APIClient(base_url=f"unix://{fwd.path}", version="auto",
                                  timeout=timeout)
    except Exception as e:      # version="auto" asks the engine at once
        fwd.close()
        raise engine_error(session.host.name, "connect to the Engine API", e) from None
    atexit.register(fwd.close)

    def close_forwarder():
        client.close()
        fwd.close()
    guarded = GuardedAPI(client, session.host.name)
    guarded.close_forwarder = close_forwarder
    guarded._swarmsmith_forwarder = fwd   # keep it alive as long as the client
    return guarded


class EngineAPIError(SwarmsmithError):
    """The Engine answered with an error; `status_code` kept (409 conflict, 404 not found)."""

    def __init__(self, message: str, *, host: str | None = None, status_code=None):
        super().__init__(message, host=host)
        self.status_code = status_code


class EngineUnreachableError(UnreachableError):
    pass


def engine_error(host: str, operation: str, exc: BaseException) -> SwarmsmithError:
    """A docker SDK, requests or paramiko error as a swarmsmith error naming host and operation:
    an answer with an HTTP status is exit 1, a lost connection exit 3."""
    if isinstance(exc, SwarmsmithError):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        detail = f"{getattr(exc, 'explanation', None) or exc} (HTTP {status})"
        err = EngineAPIError(f"Engine API {operation}: {detail}", host=host, status_code=status)
    else:
        detail = (f"the connection to the manager failed ({type(exc).__name__}: "
                  f"{(str(exc) or '-')[:300]})")
        err = EngineUnreachableError(f"Engine API {operation}: {detail}", host=host)
    err.detail = detail     # callers that know the operation better put it in front
    return err


class GuardedAPI:
    """docker.APIClient with every call's library errors turned into swarmsmith errors that
    name the manager and the call (status, planning and watching alike)."""

    def __init__(self, client, host: str):
        self._client = client
        self._host = host

    def __getattr__(self, name):
        value = getattr(self._client, name)
        if not callable(value) or name.startswith("__") or name in ("_url",):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except Exception as e:
                raise engine_error(self._host, _operation(name), e) from None
        return call


def _operation(method: str) -> str:
    return method.strip("_").replace("_", " ")


def inventory_hosts(cluster_path: str, role: str | None = None) -> list:
    """Hosts recorded by `up`, with the SSH key the cluster uses and their pinned keys."""
    from inventory import clusterfile
    from inventory.state import StateDir
    from .hosts import Host

    cf = clusterfile.load(cluster_path)
    inv = StateDir(cluster_path, cf.name).load()
    key_path = cf.ssh_key
    lab_key = None
    if cf.provider == "lab":
        from .lab.lab import Lab
        lab = Lab(cf.provider_settings.get("name") or cf.name)
        lab_key = key_path = lab.layout.key_path if lab.exists else ""
    hosts = []
    for name, rec in sorted(inv.get("hosts", {}).items()):
        if not rec.get("node_id") or (role and rec.get("role") != role):
            continue
        # the port and key `up` used for this host (a static host may name its own)
        hosts.append(Host(name=name, public_address=rec["public_address"],
                          private_address=rec.get("private_address"),
                          user=rec.get("user", cf.ssh_user),
                          key_path=lab_key if lab_key is not None else (rec.get("key") or key_path),
                          port=rec.get("port") or cf.ssh_port,
                          host_key=rec.get("host_key", ""), role=rec.get("role", "")))
    if not hosts:
        raise SwarmsmithError(f"cluster {cf.name} has no {role or 'host'} in its inventory: run "
                              f"`swarmsmith up {cluster_path}` first")
    return hosts


def session_for(host) -> Session:
    # host.host_key here is the key pinned in the inventory: a mismatch is refused
    return Session(host, pinned_key=host.host_key, connect_deadline=10)


def manager_session(cluster_path: str) -> Session:
    """A session to a reachable manager of the cluster, host key verified against the inventory."""
    errors: list[SwarmsmithError] = []
    for host in inventory_hosts(cluster_path, "manager"):
        s = session_for(host)
        try:
            s.connect()
            return s
        except HostKeyMismatchError:
            raise       # not a reason to try the next manager: someone may be in between
        except SwarmsmithError as e:
            errors.append(e)
    text = "no manager reachable:\n  " + "\n  ".join(str(e) for e in errors)
    if all(isinstance(e, UnreachableError) for e in errors):
        raise UnreachableError(text)
    raise SwarmsmithError(text)


def cluster_client(cluster_path: str):
    return api_client(manager_session(cluster_path))
