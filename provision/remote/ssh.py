"""The one executor: every remote command runs through Session.run. Only this module (and the
docker socket forwarder) touches paramiko and fabric. Commands run on raw paramiko channels
(binary stdin, masked secrets, timeouts); fabric's file transfer carries files, imported only
when a file moves, since importing fabric and invoke costs a no-op run more than its whole work.

Host keys: a pinned key (cluster file, inventory, the swarm's record) is required to match; a key
the provider knows out of band (the lab) is checked on first contact. A host with neither is
refused when the session requires a pin (every command but `up`, unless --accept-new-host-keys);
`up` pins the first key seen.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import threading
import time
from dataclasses import dataclass

from .command import Command
from ..base.errors import (HostKeyMismatchError, HostKeyUnknownError, InputError, RemoteCommandError,
                     UnreachableError)

ACCEPT_NEW_FLAG = "--accept-new-host-keys"
from ..base.hosts import Host


log = logging.getLogger("swarmsmith.ssh")     # SWARMSMITH_DEBUG=1: cli.py shows debug lines
_IMPORT_LOCK = threading.Lock()


def load_ssh_stack():
    """Import paramiko once, under a lock. Two threads importing paramiko at the same
    time (the background preload and a connect) can get a partially initialised module
    ("cannot import name 'Message' from partially initialized module"); `plan` hit it."""
    with _IMPORT_LOCK:
        return import_paramiko()


def import_paramiko():
    """paramiko, imported without invoke (call under _IMPORT_LOCK). paramiko's ssh_config
    support imports invoke (fabric's task runner, installed with fabric) for `Match exec`
    lines, which swarmsmith never reads (hosts come from the cluster file, keys are pinned):
    about a third of paramiko's import time (~65 ms idle, far more on a busy machine) in
    every command. Hidden while paramiko loads; fabric_connection() gives it back when a file
    moves."""
    import sys
    if "paramiko" in sys.modules:
        return sys.modules["paramiko"]
    hidden = "invoke" not in sys.modules
    if hidden:
        sys.modules["invoke"] = None        # `import invoke` raises ImportError
    try:
        import paramiko
    finally:
        if hidden and sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]
    return paramiko


def fabric_connection():
    """fabric's Connection class, with invoke given back to paramiko's ssh_config support
    (fabric reads the user's ssh_config, which may hold `Match exec`; see import_paramiko)."""
    from fabric import Connection
    import invoke
    import paramiko.config
    if paramiko.config.invoke is None:
        paramiko.config.invoke = invoke
    return Connection


class _Open:
    """A session's open SSH client (paramiko's SSHClient; channels come from its transport)."""
    __slots__ = ("client",)

    def __init__(self, client):
        self.client = client


def fingerprint(key_line: str) -> str:
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass
class Result:
    stdout: str
    stderr: str
    exit_status: int

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Session:
    """One SSH connection to one host, opened lazily and reused for the whole run."""

    def __init__(self, host: Host, pinned_key: str = "", connect_deadline: float = 60.0,
                 accept_new_key: bool = False, require_pin: bool = False,
                 mismatch_hint: str = "", clock=time.monotonic, sleep=time.sleep):
        self.host = host
        self.pinned_key = pinned_key
        self.accept_new_key = accept_new_key
        # require_pin: a host with no known key is refused (before authenticating) instead of
        # trusted on first use
        self.require_pin = require_pin and not accept_new_key
        self.mismatch_hint = mismatch_hint or (
            "If the host was rebuilt on purpose, accept the new key with "
            f"`swarmsmith up --accept-host-key {host.name}`")
        self.connect_deadline = connect_deadline
        self.clock, self.sleep = clock, sleep
        self.seen_key = ""          # "type base64" the server presented
        self._conn = None

    # --- connection -------------------------------------------------------------------
    def _expected_key(self) -> str:
        if self.pinned_key and not self.accept_new_key:
            return self.pinned_key
        return self.host.host_key   # provider-known key, or "" for trust on first use

    def connect(self):
        if self._conn is not None:
            return self._conn
        paramiko = load_ssh_stack()

        expected = self._expected_key()
        deadline = self.clock() + self.connect_deadline
        delay = 0.2
        while True:
            client = paramiko.SSHClient()   # no system known_hosts: the inventory pins keys
            client.set_missing_host_key_policy(_RecordPolicy(self))
            if expected:
                kind, key = self._decode_key(paramiko, expected)
                client.get_host_keys().add(self._known_hosts_name(), kind, key)
            try:
                sock = socket.create_connection((self.host.public_address, self.host.port), timeout=5)
                # small request/response exchanges: Nagle + delayed ACK would add ~40 ms each
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.connect(self.host.public_address, port=self.host.port, sock=sock,
                               username=self.host.user, key_filename=self.host.key_path or None,
                               look_for_keys=False, allow_agent=False, timeout=5,
                               banner_timeout=10, auth_timeout=10)
                break
            except paramiko.BadHostKeyException as e:
                got = f"{e.key.get_name()} {e.key.get_base64()}"
                client.close()
                raise HostKeyMismatchError(
                    f"host key for {self.host.public_address} changed: expected "
                    f"{fingerprint(expected)}, got {fingerprint(got)}. Refusing to connect. "
                    f"{self.mismatch_hint}", host=self.host.name)
            except _UnpinnedKey as e:
                client.close()
                raise HostKeyUnknownError(
                    f"no pinned host key for {self.host.public_address} (it offers "
                    f"{fingerprint(e.key)}); refusing to trust it on first use. Pin it in the "
                    "cluster file (static.hosts[].host_key or ssh.known_hosts; `swarmsmith "
                    "hostkeys` prints the keys of a cluster) or pass "
                    f"{ACCEPT_NEW_FLAG}", host=self.host.name)
            except paramiko.AuthenticationException as e:
                raise UnreachableError(f"SSH authentication as {self.host.user} failed with key "
                                       f"{self.host.key_path or '(none)'}: {e}", host=self.host.name)
            except paramiko.SSHException as e:
                if "not found in known_hosts" in str(e) or "key" in str(e).lower() and "host" in str(e).lower():
                    raise UnreachableError(str(e), host=self.host.name)
                err = e
            except (OSError, EOFError) as e:
                err = e
            client.close()
            if self.clock() >= deadline:
                raise UnreachableError(f"cannot reach {self.host.public_address}:{self.host.port} "
                                       f"over SSH within {self.connect_deadline:.0f}s: {err}",
                                       host=self.host.name)
            self.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        log.debug("%s: connected", self.host.name)
        if not self.seen_key:
            k = client.get_transport().get_remote_server_key()
            self.seen_key = f"{k.get_name()} {k.get_base64()}"
        client.get_transport().set_keepalive(15)
        self._conn = _Open(client)
        return self._conn

    def _decode_key(self, paramiko, line: str):
        try:
            kind, blob = line.split()[:2]
            return kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob, validate=True))
        except (ValueError, binascii.Error, paramiko.SSHException) as e:
            raise InputError(f"the pinned SSH host key does not decode ({e or 'bad format'}); "
                             "delete it from the inventory and run `swarmsmith up` to pin the "
                             "key the host shows", path=f"host {self.host.name}") from None

    def _known_hosts_name(self) -> str:
        a = self.host.public_address
        return a if self.host.port == 22 else f"[{a}]:{self.host.port}"

    @property
    def transport(self):
        return self.connect().client.get_transport()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.client.close()
            self._conn = None

    # --- running ----------------------------------------------------------------------
    def run(self, cmd: Command, check: bool = True, timeout: float | None = 300,
            source=None, on_sent=None) -> Result:
        """Run on a fresh channel of the shared connection. Raw paramiko channel rather than
        fabric's runner: stdin may be binary (image tarballs) and large, and the runner's
        per-character stdin pump is both slow and text-only. `source` (a binary file object)
        is streamed as stdin instead of `cmd.stdin`, calling `on_sent(total bytes sent)`
        after each chunk, so big uploads need no memory and can show progress."""
        paramiko = load_ssh_stack()
        transport = self.connect().client.get_transport()
        t0 = time.monotonic()
        try:
            chan = transport.open_session(timeout=30)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(cmd, e) from None
        chan.settimeout(timeout)
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(cmd.wire())
            reader = threading.Thread(target=_drain_stderr, args=(chan, err), daemon=True)
            reader.start()
            # a command may end without reading all its stdin (a missing program, a refusal):
            # the channel is closed then, and its exit status and stderr say why; a connection
            # lost while sending is still a lost connection
            if cmd.stdin is not None:
                view = memoryview(cmd.stdin)
                chunks = (view[i:i + (1 << 16)] for i in range(0, len(view), 1 << 16))
            else:
                chunks = iter(lambda: source.read(1 << 18), b"") if source is not None else ()
            sent = 0
            for chunk in chunks:
                try:
                    chan.sendall(chunk)
                except OSError:
                    if not transport.is_active():
                        raise
                    break
                sent += len(chunk)
                if on_sent and source is not None:
                    on_sent(sent)
            chan.shutdown_write()
            while True:
                data = chan.recv(1 << 16)
                if not data:
                    break
                out += data
            status = chan.recv_exit_status()
            reader.join(timeout=5)
        except socket.timeout:
            raise RemoteCommandError(f"command timed out after {timeout}s", host=self.host.name,
                                     command=cmd.masked(), exit_status=None)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(cmd, e) from None
        finally:
            chan.close()
        res = Result(cmd.scrub(out.decode(errors="replace")), cmd.scrub(err.decode(errors="replace")),
                     status)
        log.debug("%s: %r -> %s in %.3fs", self.host.name, cmd.masked()[:120], res.exit_status,
                  time.monotonic() - t0)
        if check and res.exit_status not in cmd.ok_codes:
            raise RemoteCommandError(cmd.description or "command failed", host=self.host.name,
                                     command=cmd.masked(), exit_status=res.exit_status,
                                     output=res.stdout + res.stderr)
        return res

    def _lost(self, cmd: Command, e: BaseException) -> UnreachableError:
        """The SSH connection failed under a command: exit 3, naming host and operation."""
        what = cmd.description or cmd.masked()[:80]
        return UnreachableError(f"{what}: the SSH connection failed ({type(e).__name__}: "
                                f"{cmd.scrub(str(e)) or '-'})", host=self.host.name)

    def _fabric(self):
        """A fabric Connection over this session's verified client: fabric never opens a
        connection of its own, so the pinned host key is the one already checked."""
        Connection = fabric_connection()
        client = self.connect().client
        conn = Connection(self.host.public_address, user=self.host.user, port=self.host.port)
        conn.client = client
        conn.transport = client.get_transport()
        return conn

    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write a file atomically (a temporary name, then a rename), with `mode`."""
        import io
        conn = self._fabric()
        tmp = remote_path + ".swarmsmith-tmp"
        conn.put(io.BytesIO(data), remote=tmp, preserve_mode=False)
        sftp = conn.sftp()
        sftp.chmod(tmp, mode)
        sftp.posix_rename(tmp, remote_path)

    def get(self, remote_path: str, local) -> None:
        """Copy a remote file into `local` (a path or a binary file object)."""
        self._fabric().get(remote_path, local=local, preserve_mode=False)


def _drain_stderr(chan, buf: bytearray) -> None:
    try:
        while True:
            data = chan.recv_stderr(1 << 16)
            if not data:
                return
            buf += data
    except (OSError, EOFError):
        return


class _UnpinnedKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class _RecordPolicy:
    """Missing-key policy for first contact: remember the key; let the connection proceed
    unless the session requires a pin (then stop before authenticating)."""

    def __init__(self, session: Session):
        self.session = session

    def missing_host_key(self, client, hostname, key):
        self.session.seen_key = f"{key.get_name()} {key.get_base64()}"
        if self.session.require_pin:
            raise _UnpinnedKey(self.session.seen_key)
