"""The Engine API client keeps one pool of connections for every path: docker-py keys its pools
by the request's whole URL, and through SSH each new connection is a channel and a
`docker system dial-stdio` process on the host. An HTTP/1.1 engine stand-in on a unix socket
counts the connections a client opens."""
from __future__ import annotations

import json
import os
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import docker
import pytest

from provision.engine_api import transport as docker_socket
from provision.engine_api.transport import one_pool_client


class _Engine(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, as dockerd

    def do_GET(self):
        body = json.dumps({"ApiVersion": "1.41", "ID": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        super().__init__(path, _Engine)
        self.connections = 0

    def process_request(self, request, client_address):
        self.connections += 1
        super().process_request(request, client_address)


@pytest.fixture
def engine():
    """The stand-in's socket path and server, shut down after the test."""
    path = os.path.join(tempfile.mkdtemp(), "docker.sock")
    server = _Server(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path, server
    server.shutdown()


def _calls(client):
    for node in ("n1", "n2", "n3", "n4"):
        assert client.inspect_node(node)["ID"].endswith(f"/nodes/{node}")
    client.info()


@pytest.mark.parametrize("one_pool, connections", [
    # one connection for the version check and the five calls
    (True, 1),
    # what the pool is for: docker-py alone opens a connection per new path (if it ever
    # pools by host, this case says the pool can go)
    (False, 6),
])
def test_one_pool_reuses_one_connection_for_every_path(engine, one_pool, connections):
    path, server = engine
    client = (one_pool_client(docker, path, 10) if one_pool else
              docker.APIClient(base_url=f"unix://{path}", version="auto", timeout=10))
    try:
        _calls(client)
        assert server.connections == connections
    finally:
        client.close()


def test_api_client_asks_the_version_on_the_connection_it_keeps(engine, monkeypatch):
    """api_client over a forwarder (here: straight to the stand-in's socket) opens one
    connection for the version check and every call after it, and speaks the engine's
    API version."""
    path, server = engine

    class Forwarder:
        def __init__(self, session):
            self.path = path

        def close(self):
            pass
    monkeypatch.setattr(docker_socket, "SocketForwarder", Forwarder)
    api = docker_socket.api_client(SimpleNamespace(host=SimpleNamespace(name="m1")), timeout=10)
    try:
        _calls(api)
        assert api.api_version == "1.41"
        assert server.connections == 1
        assert api.forwarder.path == path       # kept as long as the client
    finally:
        api.close_forwarder()


def test_the_clients_touch_no_private_attribute_of_the_docker_sdk():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(docker_socket))
    private = sorted({n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                      and isinstance(n.ctx, ast.Store) and n.attr.startswith("_")
                      and not (isinstance(n.value, ast.Name) and n.value.id == "self")})
    assert private == []
