"""Conversion of compose services to swarm specs (shapes as the Engine API takes them)."""
from __future__ import annotations

import base64
import textwrap

import pytest

from stacks.specs.convert import CONTENT_LABEL, convert
from stacks.compose.loader import load
from stacks.compose.values import (format_duration, parse_cpus, parse_duration, parse_memory,
                                   split_command)
from stacks.images.references import familiar_image
from stacks.compose.validate import validate


def stack(tmp_path, services, top="", stack_name="st", versioned=True, env=None):
    text = 'version: "3.13"\nservices:\n' + textwrap.indent(textwrap.dedent(services), "  ") \
        + "\n" + textwrap.dedent(top)
    f = tmp_path / "stack.yml"
    f.write_text(text)
    c = load([str(f)], environ=env or {})
    validate(c, stack=stack_name, versioned_objects=versioned)
    return convert(c, stack_name, versioned_objects=versioned)


def web(tmp_path, body, top="", **kw):
    return stack(tmp_path, "web:\n" + textwrap.indent(textwrap.dedent(body), "  "), top,
                 **kw).services["st_web"]


def cs(spec):
    return spec["TaskTemplate"]["ContainerSpec"]


# --- units ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,ns", [("1m30s", 90 * 10**9), ("500ms", 5 * 10**8),
                                     ("1.5h", 5400 * 10**9), ("0", 0), ("2us", 2000),
                                     ("1h1m1s", 3661 * 10**9), ("-1s", -10**9)])
def test_durations(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["10", "1x", "", "s", "1.s5", "1 s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("ns,text", [(90 * 10**9, "1m30s"), (0, "0s"), (1500000, "1.5ms"),
                                     (3600 * 10**9, "1h0m0s")])
def test_format_duration(ns, text):
    assert format_duration(ns) == text


@pytest.mark.parametrize("text,size", [("512m", 512 * 2**20), ("512M", 512 * 2**20),
                                       ("1.5g", int(1.5 * 2**30)), ("2GiB", 2 * 2**30),
                                       ("100", 100), ("100b", 100), ("1kb", 1024),
                                       ("1 MB", 2**20)])
def test_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text,nano", [("0.5", 5 * 10**8), ("2", 2 * 10**9),
                                       ("0.000000001", 1), ("1/4", 25 * 10**7)])
def test_cpus(text, nano):
    assert parse_cpus(text) == nano


@pytest.mark.parametrize("ref,out", [
    ("nginx", "nginx:latest"), ("nginx:1.25", "nginx:1.25"),
    ("docker.io/library/nginx", "nginx:latest"), ("docker.io/me/app", "me/app:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("nginx@sha256:" + "a" * 64, "nginx@sha256:" + "a" * 64),
    ("nginx:1@sha256:" + "b" * 64, "nginx:1@sha256:" + "b" * 64),
])
def test_familiar_image(ref, out):
    assert familiar_image(ref) == out


@pytest.mark.parametrize("text,words", [
    ('nginx -g "daemon off;"', ["nginx", "-g", "daemon off;"]),
    ("echo 'a  b' c\\ d", ["echo", "a  b", "c d"]),
    ('a "" b', ["a", "", "b"]),
    ("run a#b #comment here", ["run", "a#b"]),
])
def test_split_command(text, words):
    assert split_command(text) == words


# --- services ------------------------------------------------------------------------------

def test_names_labels_and_defaults(tmp_path):
    s = web(tmp_path, """
        image: nginx
        labels: {c: "1", com.docker.stack.namespace: mine}
        deploy: {labels: [d=2, bare]}
    """)
    assert s["Name"] == "st_web"
    assert s["Labels"] == {"d": "2", "bare": "", "com.docker.stack.namespace": "st",
                           "com.docker.stack.image": "nginx"}
    assert cs(s)["Labels"] == {"c": "1", "com.docker.stack.namespace": "st"}
    assert cs(s)["Image"] == "nginx:latest"
    assert s["Mode"] == {"Replicated": {}}
    assert s["EndpointSpec"] == {}
    assert s["TaskTemplate"]["Networks"] == [{"Target": "st_default", "Aliases": ["web"]}]
    assert s["TaskTemplate"]["Placement"] == {} and s["TaskTemplate"]["Resources"] == {}
    assert "UpdateConfig" not in s and "RestartPolicy" not in s["TaskTemplate"]


CASES = [
    ("command: a b\nentrypoint: [sh, -c]", lambda s: (cs(s)["Args"], cs(s)["Command"]),
     (["a", "b"], ["sh", "-c"])),
    ("environment: {B: '2', A: 1.0, C: null, T: '{{.Node.ID}}'}", lambda s: cs(s)["Env"],
     ["A=1", "B=2", "C", "T={{.Node.ID}}"]),
    ("user: '1000:1000'\nworking_dir: /app\nhostname: h\nstop_signal: SIGINT",
     lambda s: [cs(s)[k] for k in ("User", "Dir", "Hostname", "StopSignal")],
     ["1000:1000", "/app", "h", "SIGINT"]),
    ("init: false\nread_only: true\ntty: true\nstdin_open: true",
     lambda s: [cs(s).get(k) for k in ("Init", "ReadOnly", "TTY", "OpenStdin")],
     [False, True, True, True]),
    ("stop_grace_period: 1m30s", lambda s: cs(s)["StopGracePeriod"], 90 * 10**9),
    ("cap_add: [net_admin, ' sys_time', CAP_CHOWN, chown]\ncap_drop: [NET_ADMIN, mknod]",
     lambda s: (cs(s)["CapabilityAdd"], cs(s)["CapabilityDrop"]),
     (["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_TIME"], ["CAP_MKNOD"])),
    ("cap_add: [ALL, net_admin]", lambda s: (cs(s)["CapabilityAdd"], cs(s).get("CapabilityDrop")),
     (["ALL"], None)),
    ("sysctls: [net.core.somaxconn=1024]", lambda s: cs(s)["Sysctls"],
     {"net.core.somaxconn": "1024"}),
    ("ulimits: {nproc: 65535, nofile: {soft: 1, hard: 2}}", lambda s: cs(s)["Ulimits"],
     [{"Name": "nofile", "Soft": 1, "Hard": 2}, {"Name": "nproc", "Soft": 65535, "Hard": 65535}]),
    ("extra_hosts: ['db:10.0.0.2', 'v6=[::1]']", lambda s: cs(s)["Hosts"],
     ["10.0.0.2 db", "::1 v6"]),
    ("extra_hosts: {b: 10.0.0.2, a: 10.0.0.1}", lambda s: cs(s)["Hosts"],
     ["10.0.0.1 a", "10.0.0.2 b"]),
    ("dns: [8.8.8.8]\ndns_search: example.org", lambda s: cs(s)["DNSConfig"],
     {"Nameservers": ["8.8.8.8"], "Search": ["example.org"]}),
    ("healthcheck: {test: curl -f x, interval: 10s, timeout: 2s, retries: 3, start_period: 1m,"
     " start_interval: 1s}", lambda s: cs(s)["Healthcheck"],
     {"Test": ["CMD-SHELL", "curl -f x"], "Interval": 10**10, "Timeout": 2 * 10**9,
      "Retries": 3, "StartPeriod": 60 * 10**9, "StartInterval": 10**9}),
    ("healthcheck: {disable: true}", lambda s: cs(s)["Healthcheck"], {"Test": ["NONE"]}),
    ("logging: {driver: syslog, options: {tag: x, n: 3}}", lambda s: s["TaskTemplate"]["LogDriver"],
     {"Name": "syslog", "Options": {"tag": "x", "n": "3"}}),
    ("oom_score_adj: 100\nisolation: process", lambda s: (cs(s)["OomScoreAdj"], cs(s)["Isolation"]),
     (100, "process")),
    ("ports: ['8000-8001:80', '9000/udp', {target: 443, published: 8443, mode: host}]",
     lambda s: s["EndpointSpec"]["Ports"],
     [{"Protocol": "udp", "TargetPort": 9000, "PublishMode": "ingress"},
      {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8000, "PublishMode": "ingress"},
      {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8001, "PublishMode": "ingress"},
      {"TargetPort": 443, "PublishedPort": 8443, "PublishMode": "host"}]),
    ("deploy: {endpoint_mode: DNSRR}", lambda s: s["EndpointSpec"], {"Mode": "dnsrr"}),
    ("deploy: {replicas: 0}", lambda s: s["Mode"], {"Replicated": {"Replicas": 0}}),
    ("deploy: {mode: global}", lambda s: s["Mode"], {"Global": {}}),
    ("deploy: {mode: global-job}", lambda s: s["Mode"], {"GlobalJob": {}}),
    ("deploy: {mode: replicated-job, replicas: 4}", lambda s: s["Mode"],
     {"ReplicatedJob": {"MaxConcurrent": 4, "TotalCompletions": 4}}),
    ("deploy: {resources: {limits: {cpus: '0.5', memory: 512M, pids: 100}, reservations: "
     "{cpus: '0.25', memory: 64m, generic_resources: [{discrete_resource_spec: {kind: gpu, value: 2}}]}}}",
     lambda s: s["TaskTemplate"]["Resources"],
     {"Limits": {"NanoCPUs": 5 * 10**8, "MemoryBytes": 512 * 2**20, "Pids": 100},
      "Reservations": {"NanoCPUs": 25 * 10**7, "MemoryBytes": 64 * 2**20,
                       "GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]}}),
    ("deploy: {restart_policy: {condition: on-failure, delay: 5s, max_attempts: 0, window: 1m}}",
     lambda s: s["TaskTemplate"]["RestartPolicy"],
     {"Condition": "on-failure", "Delay": 5 * 10**9, "MaxAttempts": 0, "Window": 60 * 10**9}),
    ("restart: on-failure:3", lambda s: s["TaskTemplate"]["RestartPolicy"],
     {"Condition": "on-failure", "MaxAttempts": 3}),
    ("restart: unless-stopped", lambda s: s["TaskTemplate"]["RestartPolicy"], {"Condition": "any"}),
    ("restart: 'no'", lambda s: s["TaskTemplate"].get("RestartPolicy"), None),
    ("deploy: {update_config: {delay: 10s, order: start-first, failure_action: rollback, "
     "monitor: 1m, max_failure_ratio: 0.5}}", lambda s: s["UpdateConfig"],
     {"Parallelism": 1, "Delay": 10**10, "Order": "start-first", "FailureAction": "rollback",
      "Monitor": 60 * 10**9, "MaxFailureRatio": 0.5}),
    ("deploy: {rollback_config: {parallelism: 0}}", lambda s: s["RollbackConfig"],
     {"Parallelism": 0}),
    ("deploy: {placement: {constraints: [node.role==worker], preferences: [{spread: node.labels.az}],"
     " max_replicas_per_node: 2}}", lambda s: s["TaskTemplate"]["Placement"],
     {"Constraints": ["node.role==worker"],
      "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.az"}}], "MaxReplicas": 2}),
]


@pytest.mark.parametrize("body,get,expected", CASES, ids=[c[0][:40] for c in CASES])
def test_service_keys(tmp_path, body, get, expected):
    assert get(web(tmp_path, "image: nginx\n" + body)) == expected


def test_environment_bare_takes_deploying_env(tmp_path):
    s = web(tmp_path, "image: nginx\nenvironment: [A, B=]", env={"A": "a", "B": "b"})
    assert cs(s)["Env"] == ["A=a", "B=b"]


def test_networks_and_aliases(tmp_path):
    st = stack(tmp_path, """
        web:
          image: nginx
          networks:
            front: {aliases: [www]}
            ext: {}
            named: null
    """, """
        networks:
          front: {driver_opts: {encrypted: ""}, attachable: true, labels: [x=1],
                  ipam: {config: [{subnet: 10.9.0.0/24}]}}
          ext: {external: true, name: shared}
          named: {name: custom-net, internal: true}
          unused: {}
    """)
    nets = st.services["st_web"]["TaskTemplate"]["Networks"]
    assert nets == [{"Target": "custom-net", "Aliases": ["web"]},
                    {"Target": "shared", "Aliases": ["web"]},
                    {"Target": "st_front", "Aliases": ["www", "web"]}]
    assert sorted(st.networks) == ["custom-net", "st_front"]     # unused and external skipped
    assert st.external_networks == ["shared"]
    assert st.networks["st_front"] == {
        "Name": "st_front", "Driver": "overlay", "Options": {"encrypted": ""},
        "Internal": False, "Attachable": True,
        "Labels": {"x": "1", "com.docker.stack.namespace": "st"},
        "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}]}}
    assert st.networks["custom-net"]["Internal"] is True


def test_mounts(tmp_path):
    s = web(tmp_path, """
        image: nginx
        volumes:
          - data:/data:ro,nocopy
          - ext:/ext
          - /anon
          - ./conf:/conf:rshared
          - {type: tmpfs, target: /tmp, tmpfs: {size: 1024}}
          - {type: volume, source: data, target: /sub, volume: {subpath: a/b}}
    """, """
        volumes:
          data: {driver: local, driver_opts: {type: nfs}, labels: {k: v}}
          ext: {external: true, name: shared-vol}
    """)
    labels = {"k": "v", "com.docker.stack.namespace": "st"}
    driver = {"Name": "local", "Options": {"type": "nfs"}}
    assert cs(s)["Mounts"] == [
        {"Type": "volume", "Source": "st_data", "Target": "/data", "ReadOnly": True,
         "VolumeOptions": {"NoCopy": True, "Labels": labels, "DriverConfig": driver}},
        {"Type": "volume", "Source": "shared-vol", "Target": "/ext", "VolumeOptions": {}},
        {"Type": "volume", "Target": "/anon"},
        {"Type": "bind", "Source": str(tmp_path / "conf"), "Target": "/conf",
         "BindOptions": {"Propagation": "rshared"}},
        {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1024}},
        {"Type": "volume", "Source": "st_data", "Target": "/sub",
         "VolumeOptions": {"Subpath": "a/b", "Labels": labels, "DriverConfig": driver}},
    ]


def test_secrets_and_configs_versioned(tmp_path):
    (tmp_path / "pw.txt").write_bytes(b"hunter2")
    (tmp_path / "app.conf").write_bytes(b"x=1")
    top = """
        secrets:
          pw: {file: ./pw.txt, labels: {a: b}}
          ext: {external: true}
          fixed: {file: ./pw.txt, name: my-fixed}
        configs:
          conf: {file: ./app.conf, template_driver: golang}
    """
    body = """
        image: nginx
        secrets: [pw, {source: ext, target: other, uid: '1', gid: '2', mode: 0400}, fixed]
        configs: [{source: conf, target: /etc/app.conf}]
    """
    st = stack(tmp_path, "web:\n" + textwrap.indent(textwrap.dedent(body), "  "), top)
    names = sorted(st.secrets)
    assert names[0] == "my-fixed" and names[1].startswith("st_pw-") and len(names[1]) == 16
    pw = st.secrets[names[1]]
    assert base64.b64decode(pw["Data"]) == b"hunter2"
    assert pw["Labels"]["a"] == "b" and pw["Labels"]["com.docker.stack.namespace"] == "st"
    assert pw["Labels"][CONTENT_LABEL].startswith(names[1][-10:])
    refs = cs(st.services["st_web"])["Secrets"]
    assert [r["SecretName"] for r in refs] == ["ext", "my-fixed", names[1]]   # sorted by name
    assert refs[0] == {"File": {"Name": "other", "UID": "1", "GID": "2", "Mode": 0o400},
                       "SecretID": "<id:ext>", "SecretName": "ext"}
    assert refs[2]["File"] == {"Name": "pw", "UID": "0", "GID": "0", "Mode": 0o444}
    assert st.external_secrets == ["ext"]
    conf_name = next(iter(st.configs))
    assert st.configs[conf_name]["Templating"] == {"Name": "golang"}
    assert cs(st.services["st_web"])["Configs"][0]["File"]["Name"] == "/etc/app.conf"

    # content change -> new name; same content -> same name
    (tmp_path / "pw.txt").write_bytes(b"changed")
    st2 = stack(tmp_path, "web:\n" + textwrap.indent(textwrap.dedent(body), "  "), top)
    assert sorted(st2.secrets)[1] != names[1]
    (tmp_path / "pw.txt").write_bytes(b"hunter2")
    st3 = stack(tmp_path, "web:\n" + textwrap.indent(textwrap.dedent(body), "  "), top)
    assert sorted(st3.secrets) == names


def test_unversioned_names_like_the_cli(tmp_path):
    (tmp_path / "pw.txt").write_bytes(b"x")
    st = stack(tmp_path, "web: {image: nginx, secrets: [pw]}",
               "secrets:\n  pw: {file: ./pw.txt}\n", versioned=False)
    assert list(st.secrets) == ["st_pw"]


def test_credential_spec_config(tmp_path):
    (tmp_path / "cred.json").write_text("{}")
    s = web(tmp_path, "image: nginx\ncredential_spec: {config: cred}",
            "configs:\n  cred: {file: ./cred.json}\n", versioned=False)
    assert cs(s)["Privileges"] == {"CredentialSpec": {"Config": "<id:st_cred>"}}
    assert cs(s)["Configs"] == [{"Runtime": {}, "ConfigID": "<id:st_cred>",
                                 "ConfigName": "st_cred"}]
