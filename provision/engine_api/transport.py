"""The docker SDK on a cluster manager, through our own SSH session (the transport under
provision/engine_api/sessions.py and provision/engine_api/access.py).

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

from ..base.errors import SwarmsmithError, UnreachableError
from ..remote.docker_cli import DIAL_STDIO
from ..remote.ssh import Session


DIR_PREFIX = "swarmsmith-docker-"


# a unix socket path holds at most 107 bytes: "<base>/<prefix><pid>-<8 random>/docker.sock"
_SOCKET_PATH_MAX = 107


def socket_base() -> str:
    """Where socket folders go: the temporary folder, or /tmp when that one's path is too long
    for a unix socket (a deep $TMPDIR, as CI runners and test runners set)."""
    base = tempfile.gettempdir()
    longest = len(os.path.join(base, f"{DIR_PREFIX}{2**22}-xxxxxxxx", "docker.sock"))
    return base if longest <= _SOCKET_PATH_MAX else "/tmp"


def remove_dead_forwarder_dirs(tmp: str | None = None, pid_alive=None) -> list[str]:
    """A run killed with SIGKILL never reaches atexit: its socket folder stays behind. The
    folder name carries the owner's pid; folders of pids that are gone (ours only) go."""
    tmp = tmp or socket_base()
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


def _pump(recv, send, ends: tuple) -> None:
    """Copy from `recv` to `send` until the end of the stream or an error among `ends`."""
    try:
        while True:
            data = recv(65536)
            if not data:
                return
            send(data)
    except ends:
        pass


class SocketForwarder:
    def __init__(self, session: Session):
        self.session = session
        remove_dead_forwarder_dirs()
        self.dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=socket_base())
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
            chan.exec_command(DIAL_STDIO.wire())
        except Exception:
            conn.close()
            return

        def upstream():
            try:
                _pump(conn.recv, chan.sendall, (OSError,))
            finally:
                try:
                    chan.shutdown_write()
                except Exception:
                    pass

        threading.Thread(target=upstream, daemon=True).start()
        try:
            _pump(chan.recv, conn.sendall, (OSError, EOFError))
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


def load_docker_sdk(ssh: bool = True):
    """Import the docker SDK (~1 s with requests on a busy machine) under the lock the SSH
    stack's imports share: a background preload and a first API call may race for it.
    `ssh` False: the engine's own socket only (no paramiko needed, as in the agent's image)."""
    from ..remote.ssh import _IMPORT_LOCK, import_paramiko
    with _IMPORT_LOCK:
        if ssh:
            import_paramiko()   # the SDK imports paramiko too: without invoke, as ours
        import docker
    return docker


def one_pool_client(docker, socket_path: str, timeout: int):
    """A docker.APIClient on `socket_path` whose requests all go through one pool.

    docker-py keys its connection pools by each request's whole URL, so every path not asked
    before (a node's, a service's) opens a new connection; here each connection is an SSH
    channel and a `docker system dial-stdio` process on the host (~20 ms of its CPU: 80 of
    them in a 1+15 `up`). One pool for every path keeps the connections open and reused, the
    version check's (version="auto") included. The pool comes in through requests' public
    get_adapter(), so nothing of the SDK's own state is touched."""
    from docker.transport.unixconn import UnixHTTPAdapter

    class OnePool(UnixHTTPAdapter):
        def get_connection(self, url, proxies=None):
            return super().get_connection("http+docker://localhost", proxies)

    class OnePoolClient(docker.APIClient):
        def __init__(self):
            # before the SDK's __init__, which already asks the engine for its version
            self.one_pool = OnePool(f"http+unix://{socket_path}", timeout,
                                    max_pool_size=docker.constants.DEFAULT_MAX_POOL_SIZE)
            super().__init__(base_url=f"unix://{socket_path}", timeout=timeout, version="auto")

        def get_adapter(self, url):
            return self.one_pool

        def close(self):
            super().close()
            self.one_pool.close()

    return OnePoolClient()


def api_client(session: Session, timeout: int = 60) -> "GuardedAPI":
    docker = load_docker_sdk()
    fwd = SocketForwarder(session)
    try:
        client = one_pool_client(docker, fwd.path, timeout)
    except Exception as e:      # the engine does not answer, or not as an engine
        fwd.close()
        raise engine_error(session.host.name, "connect to the Engine API", e) from None
    atexit.register(fwd.close)
    # the forwarder lives as long as the client
    return GuardedAPI(client, session.host.name, forwarder=fwd)


LOCAL_SOCKET = "/var/run/docker.sock"


def local_api_client(socket_path: str = LOCAL_SOCKET, timeout: int = 60,
                     name: str | None = None) -> "GuardedAPI":
    """The same client as api_client(), on an engine's own unix socket instead of an SSH
    channel: what runs inside the swarm with the socket mounted (the agent). `name` is what
    errors call the engine (default: this host's name)."""
    docker = load_docker_sdk(ssh=False)
    name = name or socket.gethostname()
    try:
        client = docker.APIClient(base_url=f"unix://{socket_path}", timeout=timeout,
                                  version="auto")
    except Exception as e:      # no socket, no permission, or not an engine
        raise engine_error(name, f"connect to the Engine API on {socket_path}", e) from None
    return GuardedAPI(client, name)


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

    def __init__(self, client, host: str, forwarder: "SocketForwarder | None" = None):
        self._client = client
        self.host = host
        self.forwarder = forwarder
        # the engine's swarm node ID, once a caller has read /info for another reason (the
        # manager check on connecting): asking again costs the engine a second /info
        self.node_id = ""

    def close_forwarder(self) -> None:
        """Close the client and the SSH socket forwarder under it (if any)."""
        self._client.close()
        if self.forwarder is not None:
            self.forwarder.close()

    def __getattr__(self, name):
        value = getattr(self._client, name)
        if not callable(value) or name.startswith("__"):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except Exception as e:
                raise engine_error(self.host, _operation(name), e) from None
        return call


def _operation(method: str) -> str:
    return method.strip("_").replace("_", " ")
