"""Validation: every bad input gives file, key path and what was expected; exit 2."""
from __future__ import annotations

import textwrap

import pytest

from provision.base.errors import EXIT_BAD_INPUT, InputError
from stacks.compose.loader import load
from stacks.compose.validate import validate, validate_stack_name


def check(tmp_path, services_yaml, top="", *, strict=False, node_count=None, stack="st"):
    text = "version: \"3.8\"\nservices:\n" + textwrap.indent(textwrap.dedent(services_yaml),
                                                            "  ") + "\n" + textwrap.dedent(top)
    f = tmp_path / "stack.yml"
    f.write_text(text)
    (tmp_path / "s.txt").write_text("x")
    return validate(load([str(f)], environ={}), stack=stack, strict=strict,
                    node_count=node_count)


BAD = [
    ("web: {image: nginx, deploy: {replicas: three}}",
     'services.web.deploy.replicas: expected an integer, got "three"'),
    ("web: {image: nginx, deploy: {replicas: -1}}", "expected an integer >= 0"),
    ("web: {image: nginx, stop_grace_period: 10}", "expected a duration as a string"),
    ("web: {image: nginx, stop_grace_period: '10'}", 'expected a duration such as "1m30s"'),
    ("web: {image: nginx, healthcheck: {interval: 1x}}", "healthcheck.interval: expected a duration"),
    ("web: {image: nginx, deploy: {resources: {limits: {memory: 512}}}}",
     "limits.memory: expected a memory size as a string"),
    ("web: {image: nginx, deploy: {resources: {limits: {memory: 12XB}}}}",
     'expected a memory size such as "512M", got "12XB"'),
    ("web: {image: nginx, deploy: {resources: {limits: {cpus: 0.5}}}}",
     "limits.cpus: expected a CPU count as a string"),
    ("web: {image: nginx, deploy: {resources: {limits: {cpus: '0.0000000001'}}}}",
     "limits.cpus: expected a CPU count"),
    ("web: {image: nginx, ports: ['80:80:80:x']}", "services.web.ports[0]: invalid container port"),
    ("web: {image: nginx, ports: ['70000:80']}", "ports are 1-65535"),
    ("web: {image: nginx, ports: ['80/icmp']}", "invalid protocol"),
    ("web: {image: nginx, ports: [{target: 80, mode: bridge}]}",
     'ports[0].mode: expected one of host, ingress, got "bridge"'),
    ("web: {image: nginx, deploy: {mode: daemon}}", "deploy.mode: expected one of replicated"),
    ("web: {image: nginx, deploy: {restart_policy: {condition: always}}}",
     "restart_policy.condition: expected one of none, on-failure, any"),
    ("web: {image: nginx, deploy: {update_config: {order: first}}}",
     "update_config.order: expected one of stop-first, start-first"),
    ("web: {image: nginx, deploy: {rollback_config: {failure_action: rollback}}}",
     "rollback_config.failure_action: expected one of continue, pause"),
    ("web: {image: nginx, deploy: {mode: global, replicas: 2}}",
     "deploy.replicas: cannot be set with mode global"),
    ("web: {image: nginx, deploy: {mode: replicated-job, update_config: {parallelism: 1}}}",
     "swarm refuses update_config for jobs"),
    ("web: {image: nginx, healthcheck: {disable: true, test: [CMD, 'true']}}",
     "healthcheck: test and disable: true cannot both be set"),
    ("web: {image: nginx, volumes: [{type: tmpfs, source: x, target: /t}]}",
     "a tmpfs mount cannot have a source"),
    ("web: {image: nginx, volumes: [{type: bind, source: ./x, target: /t, volume: {nocopy: true}}]}",
     "volume options cannot be used with type bind"),
    ("web: {image: nginx, volumes: ['nodata:/d']}", 'undefined volume "nodata"'),
    ("web: {image: nginx, networks: [back]}", 'undefined network "back"'),
    ("web: {image: nginx, networks: [host]}", "declare it as networks: {host: {external: true}}"),
    ("web: {image: nginx, secrets: [nope]}", 'undefined secret "nope"'),
    ("web: {image: nginx, configs: [nope]}", 'undefined config "nope"'),
    ("web: {image: nginx, extends: {service: x}}", "services.web.extends: not supported by swarm"),
    ("web: {image: nginx, mem_limit: 1g}", "use deploy.resources.limits.memory"),
    ("web: {image: nginx, dns_opt: [x]}", "services.web.dns_opt: unknown key"),
    ("web: {image: nginx, enviroment: [A=1]}", "unknown key (did you mean environment?)"),
    ("web: {build: .}", "services.web.image: is required"),
    ("web: {image: 'Nginx:latest'}", 'expected an image reference such as "nginx:1.25"'),
    ("web: {image: nginx, restart: sometimes}", 'expected no, always, unless-stopped'),
    ("web: {image: nginx, dns: [resolver.local]}", 'dns[0]: expected an IP address'),
    ("web: {image: nginx, ulimits: {nofile: {soft: 20, hard: 10}}}", "soft limit 20 above hard"),
    ("web: {image: nginx, ulimits: {nofile: {soft: 20}}}", "ulimits.nofile.hard: is required"),
    ("web: {image: nginx, environment: {FLAG: true}}", "environment.FLAG: expected a string or a number"),
    ("web: {image: nginx, deploy: {endpoint_mode: dnsrr}, ports: ['80:80']}",
     "ingress ports cannot be used with endpoint_mode dnsrr"),
    ("web: {image: nginx, credential_spec: {file: a, registry: b}}",
     "set only one of config, file and registry"),
    ("web: {image: nginx, deploy: {placement: {constraints: [node.role]}}}",
     'expected a constraint such as "node.role==manager"'),
    ("web: {image: nginx, ports: ['80:80']}\napi: {image: nginx, ports: ['80:8080']}",
     "published port 80/tcp is also published by service web"),
]


@pytest.mark.parametrize("services,fragment", BAD, ids=[f[1][:40] for f in BAD])
def test_bad_input(tmp_path, services, fragment):
    with pytest.raises(InputError) as exc:
        check(tmp_path, services)
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert fragment in str(exc.value)
    assert "stack.yml" in str(exc.value)


BAD_TOP = [
    ("secrets:\n  s: {file: ./missing.txt}\n", "secrets.s.file: file not found"),
    ("secrets:\n  s: {}\n", "secrets.s: expected file:, driver: or external: true"),
    ("secrets:\n  s: {file: ./s.txt, driver: vault}\n", "secrets.s.driver: cannot be combined"),
    ("configs:\n  c: {file: ./missing.txt}\n", "configs.c.file: file not found"),
    ("volumes:\n  v: {external: true, driver: local}\n", "cannot be set on an external volume"),
    ("networks:\n  n: {attachable: yes}\n", "networks.n.attachable: expected a boolean"),
]


@pytest.mark.parametrize("top,fragment", BAD_TOP)
def test_bad_top_level(tmp_path, top, fragment):
    with pytest.raises(InputError, match=None) as exc:
        check(tmp_path, "web: {image: nginx}", top)
    assert fragment in str(exc.value)


def test_all_problems_in_one_error(tmp_path):
    with pytest.raises(InputError) as exc:
        check(tmp_path, "web: {image: nginx, networks: [a], secrets: [b]}\n"
                        "db: {image: pg, deploy: {mode: global, replicas: 1}}")
    assert exc.value.problems and len(exc.value.problems) == 3
    assert str(exc.value).startswith("3 problems in the compose files:")


def test_ignored_keys_warn_or_fail_with_strict(tmp_path):
    svc = "web: {image: nginx, build: ., depends_on: [db], container_name: w, privileged: true}"
    warnings = check(tmp_path, svc)
    assert "services.web.build: ignored by swarm" in warnings
    assert "services.web.depends_on: ignored by swarm" in warnings
    assert "services.web.container_name: ignored by swarm (deprecated)" in warnings
    with pytest.raises(InputError) as exc:
        check(tmp_path, svc, strict=True)
    assert len(exc.value.problems) == 4
    assert "services.web.privileged: ignored by swarm (refused with --strict)" in str(exc.value)


def test_legacy_restart_is_converted_with_a_warning(tmp_path):
    warnings = check(tmp_path, "web: {image: nginx, restart: on-failure:3}")
    assert any("restart: converted to deploy.restart_policy" in w for w in warnings)


def test_port_host_ip_warns(tmp_path):
    warnings = check(tmp_path, "web: {image: nginx, ports: ['127.0.0.1:80:80']}")
    assert any("ignoring IP address 127.0.0.1" in w for w in warnings)


DEADLOCK = "web: {image: nginx, ports: [{target: 80, published: 80, mode: host}], " \
           "deploy: {replicas: %d, update_config: {order: %s}}}"


@pytest.mark.parametrize("replicas,order,nodes,deadlocks", [
    (3, "start-first", 3, True),
    (4, "start-first", 3, True),
    (2, "start-first", 3, False),
    (3, "stop-first", 3, False),
    (3, "start-first", None, False),     # node count unknown offline: not judged
])
def test_start_first_host_port_deadlock_only_warns(tmp_path, replicas, order, nodes, deadlocks):
    """A create cannot deadlock (docker stack deploy accepts the file): validation warns, the
    plan refuses only an update (test_stacks_plan_apply)."""
    warnings = check(tmp_path, DEADLOCK % (replicas, order), node_count=nodes)
    hits = [w for w in warnings if "deadlocks on update" in w]
    if deadlocks:
        assert len(hits) == 1 and "update_config.order: start-first with a host-mode " \
            "published port 80 and" in hits[0] and "an update of it is refused" in hits[0]
    else:
        assert hits == []


def test_start_first_host_port_global_warns(tmp_path):
    warnings = check(tmp_path, "web: {image: nginx, ports: [{target: 80, published: 80, "
                               "mode: host}], deploy: {mode: global, update_config: "
                               "{order: start-first}}}")
    assert any("in global mode deadlocks on update" in w for w in warnings)


def test_ingress_port_start_first_is_fine(tmp_path):
    # the routing mesh moves traffic to the new task: no port clash, so no start-first warning
    warnings = check(tmp_path, "web: {image: nginx, ports: ['80:80'], "
                               "deploy: {replicas: 5, update_config: {order: start-first}}}",
                     node_count=2)
    assert [w for w in warnings if "start-first" in w] == []


@pytest.mark.parametrize("name,ok", [("web", True), ("my-stack.1", True), ("", False),
                                     ("-x", False), ("a b", False)])
def test_stack_names(name, ok):
    if ok:
        validate_stack_name(name)
    else:
        with pytest.raises(InputError):
            validate_stack_name(name)


def test_too_long_names(tmp_path):
    with pytest.raises(InputError, match="longer than 63"):
        check(tmp_path, "web: {image: nginx}", stack="s" * 60)


def test_a_valid_full_file_passes(tmp_path):
    (tmp_path / "cfg").write_text("c")
    warnings = check(tmp_path, """
        web:
          image: nginx:1.25
          command: nginx -g "daemon off;"
          environment: [A=1]
          ports: ["8080:80", {target: 443, published: 8443, mode: host}]
          networks: {front: {aliases: [www]}}
          volumes: ["data:/data:ro", "./conf:/etc/conf", {type: tmpfs, target: /t, tmpfs: {size: 1000}}]
          secrets: [{source: pw, target: password, mode: 0400}]
          configs: [cfg]
          healthcheck: {test: curl -f localhost, interval: 10s, retries: 3, start_period: 1m}
          stop_grace_period: 1m30s
          init: true
          deploy:
            replicas: 2
            resources: {limits: {cpus: "0.5", memory: 512M}, reservations: {memory: 64m}}
            update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback}
            rollback_config: {parallelism: 0}
            restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s, window: 2m}
            placement: {constraints: [node.role==worker], preferences: [{spread: node.labels.zone}],
                        max_replicas_per_node: 1}
    """, """
        networks:
          front: {driver_opts: {encrypted: ""}, attachable: true}
        volumes:
          data: {}
        secrets:
          pw: {file: ./s.txt}
        configs:
          cfg: {file: ./cfg}
    """, node_count=3)
    assert warnings == []
