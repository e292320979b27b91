"""The Engine API adapter: errors keep their HTTP status and name the manager and the call, one
conflict test serves lock, record and the naming key; `docker save` of several images goes
through the docker SDK's public requests interface (a loopback engine answers it here)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from provision.engine_api.adapter import EngineAPI, as_engine, is_conflict, is_not_found
from provision.base.errors import SwarmsmithError


class Refusal(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.response = type("R", (), {"status_code": status})()


class Refusing:
    """A client whose config calls are refused with a status and words that say nothing."""

    def __init__(self, status: int):
        self.status = status

    def create_config(self, name, data, labels=None):
        raise Refusal(self.status, "refused")

    def remove_config(self, cid):
        raise Refusal(self.status, "refused")


def test_adapter_keeps_the_status_and_names_host_and_call():
    engine = EngineAPI(Refusing(409), where="m1")
    with pytest.raises(SwarmsmithError) as e:
        engine.add_config("swarmsmith-lock-web", b"{}", {})
    assert is_conflict(e.value) and e.value.status_code == 409 and e.value.host == "m1"
    assert "create config swarmsmith-lock-web" in str(e.value)
    with pytest.raises(SwarmsmithError) as e:
        EngineAPI(Refusing(404)).remove_config("abc", "swarmsmith-lock-web")
    assert is_not_found(e.value) and not is_conflict(e.value)
    assert as_engine(engine) is engine


def test_lock_takes_a_bare_conflict_status_as_held():
    # the refusal's words do not say "already exists": only the kept status tells
    from provision.swarm.lock import SwarmLock

    class Held(Refusing):
        def configs(self, filters=None):
            return [{"ID": "c1", "Spec": {"Name": "swarmsmith-lock-web", "Labels": {
                "com.swarmsmith.lock.owner": "other", "com.swarmsmith.lock.acquired": "100",
                "com.swarmsmith.lock.ttl": "1800"}}}]
    lock = SwarmLock(Held(409), "web", clock=lambda: 200.0, sleep=lambda s: None)
    from provision.base.errors import LockedError
    with pytest.raises(LockedError):
        lock.acquire()


class _Engine(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path.endswith("/version"):
            body, kind = b'{"ApiVersion": "1.41"}', "application/json"
        elif url.path.endswith("/json"):
            body, kind = b'{"Id": "sha256:1"}', "application/json"
        elif url.path.endswith("/images/get"):
            body, kind = ("archive of " + ",".join(parse_qs(url.query)["names"])).encode(), \
                "application/x-tar"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_docker_save_of_several_images_through_the_public_client(tmp_path):
    import docker

    from provision.images import local_engine
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = docker.APIClient(base_url=f"tcp://127.0.0.1:{server.server_port}",
                               version="1.41", timeout=10)
        path = local_engine.save(["a:1", "b:2"], str(tmp_path), api=api)
        assert open(path, "rb").read() == b"archive of a:1,b:2"
    finally:
        server.shutdown()
