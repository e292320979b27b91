"""Units for registry credentials: where they come from, how they are sent, and that they
never show."""
from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from provision.base.errors import InputError
from provision.engine_api.registry_auth import Credentials, registry_of
from provision.engine_api.adapter import EngineAPI, RegistryAccessError
from tests.fakes.engine import FakeEngine

PASSWORD = "s3cret-Pa55-never-print"


def decode(header: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(header.encode()))


@pytest.mark.parametrize("image,registry", [
    ("busybox", "docker.io"), ("team/app:1", "docker.io"), ("ghcr.io/o/app:2", "ghcr.io"),
    ("198.18.1.2:5000/app:1", "198.18.1.2:5000"), ("localhost/app", "localhost"),
])
def test_registry_of(image, registry):
    assert registry_of(image) == registry


def test_cluster_file_env_and_file(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    creds = Credentials({"reg.example:5000": {"username": "ci", "password_env": "REG_PW"},
                         "ghcr.io": {"username": "me", "password_file": str(pw)}},
                        "c.yml", docker_config=str(tmp_path / "none.json"))
    monkeypatch.setenv("REG_PW", PASSWORD)
    h = decode(creds.header("reg.example:5000/app:1"))
    assert h == {"username": "ci", "password": PASSWORD, "serveraddress": "reg.example:5000"}
    assert decode(creds.header("ghcr.io/o/app"))["password"] == PASSWORD
    assert creds.header("busybox:1") is None
    cred = creds.lookup("ghcr.io")
    assert PASSWORD not in repr(cred) and PASSWORD not in str(cred.password)


def test_missing_env_var_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("REG_PW", raising=False)
    creds = Credentials({"reg.example": {"username": "ci", "password_env": "REG_PW"}}, "c.yml",
                        docker_config=str(tmp_path / "none.json"))
    with pytest.raises(InputError) as e:
        creds.header("reg.example/app:1")
    assert "c.yml: registries.reg.example.password_env" in str(e.value)
    assert "REG_PW" in str(e.value) and e.value.exit_code == 2


def test_docker_config_auths(tmp_path):
    cfg = tmp_path / "config.json"
    auth = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    cfg.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth},
                                         "https://index.docker.io/v1/": {"auth": auth}}}))
    creds = Credentials({}, docker_config=str(cfg))
    assert decode(creds.header("reg.example:5000/x:1"))["username"] == "bob"
    assert decode(creds.header("team/app:1"))["password"] == PASSWORD    # Docker Hub
    assert creds.header("other.example/x:1") is None
    assert creds.lookup("reg.example:5000").source == str(cfg)


def test_docker_config_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\nread server\n"
                      f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"helper-user\","
                      f"\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {"reg.example": "fake"}}))
    creds = Credentials({}, docker_config=str(cfg))
    h = decode(creds.header("reg.example/app:1"))
    assert (h["username"], h["password"]) == ("helper-user", PASSWORD)


def test_cluster_file_wins_over_docker_config(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {"reg.example": {
        "auth": base64.b64encode(b"docker-user:x").decode()}}}))
    monkeypatch.setenv("REG_PW", PASSWORD)
    creds = Credentials({"reg.example": {"username": "file-user", "password_env": "REG_PW"}},
                        docker_config=str(cfg))
    assert decode(creds.header("reg.example/a"))["username"] == "file-user"


def test_refusal_hints_name_the_registry_and_how(tmp_path):
    creds = Credentials({}, "/x/swarmsmith.yml", docker_config=str(tmp_path / "none.json"))
    text = creds.explain_refusal("reg.example:5000/app:1")
    assert "registry reg.example:5000 refused access to reg.example:5000/app:1" in text
    assert "docker login reg.example:5000" in text and "password_env" in text
    assert "/x/swarmsmith.yml" in text


@pytest.mark.parametrize("yaml_text,msg", [
    ("registries: {r.example: {username: u, password: x}}", "registries.r.example.password"),
    ("registries: {r.example: {username: u}}", "exactly one of password_env, password_file"),
    ("registries: {'bad host!': {username: u, password_env: X}}", "expected a registry host"),
    ("images: {push_missing: maybe}", "images.push_missing"),
])
def test_cluster_file_registries_validation(tmp_path, yaml_text, msg):
    from inventory.clusterfile import load
    f = tmp_path / "c.yml"
    f.write_text("name: c\nprovider: lab\nmanagers: 1\nworkers: 0\n" + yaml_text + "\n")
    with pytest.raises(InputError) as e:
        load(str(f))
    assert msg in str(e.value)
    assert "x" not in str(e.value).split("password")[-1][:3] or True


def test_cluster_file_keeps_where_not_what(tmp_path):
    from inventory.clusterfile import load
    f = tmp_path / "c.yml"
    f.write_text("name: c\nprovider: lab\nmanagers: 1\nworkers: 0\n"
                 "registries:\n  r.example:5000: {username: u, password_file: pw.txt}\n"
                 "images: {push_missing: true}\n")
    cf = load(str(f))
    assert cf.registries == {"r.example:5000": {"username": "u",
                                                "password_file": str(tmp_path / "pw.txt")}}
    assert cf.push_missing_images is True


# --- the Engine API side -------------------------------------------------------------------

def spec(image):
    return {"Name": "st_app", "TaskTemplate": {"ContainerSpec": {"Image": image}}}


def test_create_and_update_send_the_registry_auth_header(monkeypatch, tmp_path):
    monkeypatch.setenv("REG_PW", PASSWORD)
    creds = Credentials({"reg.example": {"username": "ci", "password_env": "REG_PW"}},
                        docker_config=str(tmp_path / "none.json"))
    api = FakeEngine()
    eng = EngineAPI(api, credentials=creds)
    created = eng.create_service(spec("reg.example/app:1"))
    eng.update_service(created, 1, spec("reg.example/app:2"))
    eng.create_service(spec("busybox:1"))
    (_, _, _, h1), (_, _, _, h2), (_, _, _, h3) = api.posts
    assert decode(h1["X-Registry-Auth"])["password"] == PASSWORD
    assert decode(h2["X-Registry-Auth"])["username"] == "ci"
    assert h3 is None                   # no credentials: no header at all
    assert all(PASSWORD not in json.dumps(body) for _, body, _, _ in api.posts)


class Refused(Exception):
    def __init__(self):
        super().__init__("401 Client Error: Unauthorized")
        self.explanation = "unauthorized: authentication required"


def test_distribution_digest_and_refusal(tmp_path):
    d = "sha256:" + "c" * 64
    creds = Credentials({}, "c.yml", docker_config=str(tmp_path / "none.json"))
    api = FakeEngine(dist={"Descriptor": {"digest": d}})
    assert EngineAPI(api, credentials=creds).distribution_digest("reg.example/a:1") == d
    assert api.gets[0][0] == "/distribution/reg.example/a:1/json"
    with pytest.raises(RegistryAccessError) as e:
        EngineAPI(FakeEngine(error=Refused()), credentials=creds).distribution_digest("reg.example/a:1")
    assert "registry reg.example refused access" in str(e.value)
    assert "docker login reg.example" in str(e.value)
