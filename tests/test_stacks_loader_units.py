"""Loading compose files: YAML dialect, interpolation, .env, env_file, merging."""
from __future__ import annotations

import os
import textwrap

import pytest

from provision.base.errors import EXIT_BAD_INPUT, InputError
from stacks.compose.interpolate import InterpolationError, substitute
from stacks.compose.loader import load

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "stacks")


def write(tmp_path, text, name="stack.yml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


# --- interpolation -------------------------------------------------------------------------

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize("text,expected", [
    ("$SET", "value"),
    ("${SET}", "value"),
    ("a${SET}b", "avalueb"),
    ("${UNSET}", ""),
    ("${UNSET:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""),
    ("${UNSET-dflt}", "dflt"),
    ("${SET:-dflt}", "value"),
    ("${SET:?msg}", "value"),
    ("${EMPTY?msg}", ""),
    ("$$SET", "$SET"),
    ("$${SET}", "${SET}"),
    ("${UNSET:-${SET}}", "${SET}"),       # no nesting, as in the CLI
    ("$SET-bar baz", "value-bar baz"),    # CLI quirk corrected: name ends at the name
    ("${UNSET:-a b c}", "a b c"),
])
def test_substitute(text, expected):
    assert substitute(text, ENV) == expected


@pytest.mark.parametrize("text,fragment", [
    ("${UNSET:?must-be-set}", "required variable UNSET is missing a value: must-be-set"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value"),
    ("${UNSET?msg}", "required variable UNSET is missing a value: msg"),
    ("cost $", "invalid interpolation format"),
    ("$1", "invalid interpolation format"),
    ("${FOO", "invalid interpolation format"),
    ("${A:+x}", "invalid interpolation format"),
])
def test_substitute_errors(text, fragment):
    with pytest.raises(InterpolationError) as exc:
        substitute(text, ENV)
    assert fragment in str(exc.value)


def test_required_variable_error_names_file_and_path(tmp_path):
    f = write(tmp_path, """
        services:
          web:
            image: "nginx:${TAG:?must-be-set}"
    """)
    with pytest.raises(InputError) as exc:
        load([f], environ={})
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert str(exc.value).startswith(f"{f}: services.web.image: required variable TAG")
    assert "(line 4)" in str(exc.value)


@pytest.mark.parametrize("value,env,expected", [
    ("${N}", {"N": "3"}, 3),                 # deploy.replicas cast to int
    ("${N:-0}", {}, 0),
])
def test_cast_after_interpolation(tmp_path, value, env, expected):
    f = write(tmp_path, f"""
        services:
          web:
            image: nginx
            deploy: {{replicas: "{value}"}}
    """)
    assert load([f], environ=env).model["services"]["web"]["deploy"]["replicas"] == expected


@pytest.mark.parametrize("raw,expected", [("yes", True), ("OFF", False), ("True", True)])
def test_bool_cast_after_interpolation(tmp_path, raw, expected):
    f = write(tmp_path, """
        services:
          web: {image: nginx, read_only: "${RO}"}
    """)
    assert load([f], environ={"RO": raw}).model["services"]["web"]["read_only"] is expected


def test_literal_string_replicas_is_not_cast(tmp_path):
    f = write(tmp_path, """
        services:
          web: {image: nginx, deploy: {replicas: "2"}}
    """)
    with pytest.raises(InputError, match='replicas: expected an integer, got "2"'):
        load([f], environ={})


def test_interpolation_leaves_keys_and_reaches_x_fields(tmp_path):
    f = write(tmp_path, """
        version: "3.8"
        x-note: "${WHO}"
        services:
          web: {image: nginx, labels: {"${KEY}": "${WHO}"}}
    """)
    m = load([f], environ={"WHO": "me", "KEY": "k"}).model
    assert m["x-note"] == "me"
    assert m["services"]["web"]["labels"] == {"${KEY}": "me"}


# --- YAML dialect --------------------------------------------------------------------------

def test_yaml_like_go_yaml_v3(tmp_path):
    f = write(tmp_path, """
        version: "3.8"
        services:
          web:
            image: nginx
            ports: [22:22]
            environment: {FLAG: "x", MODE: on}
            configs: [{source: c, mode: 0440}]
        configs:
          c: {file: ./c.txt}
    """)
    m = load([f], environ={}).model
    web = m["services"]["web"]
    assert web["ports"] == [{"mode": "ingress", "target": 22, "published": 22, "protocol": "tcp"}]
    assert web["configs"][0]["mode"] == 0o440
    with pytest.raises(InputError, match="read_only: expected a boolean, got \"yes\""):
        load([write(tmp_path, "services: {web: {image: nginx, read_only: yes}}", "b.yml")],
             environ={})


def test_unquoted_version_is_refused(tmp_path):
    f = write(tmp_path, "version: 3.10\nservices: {web: {image: nginx}}\n")
    with pytest.raises(InputError, match="version: expected a string"):
        load([f], environ={})


@pytest.mark.parametrize("version,ok", [("3", True), ("3.0", True), ("3.13", True),
                                        ("2", False), ("3.14", False), ("3.x", False)])
def test_versions(tmp_path, version, ok):
    f = write(tmp_path, f'version: "{version}"\nservices: {{web: {{image: nginx}}}}\n')
    if ok:
        load([f], environ={})
    else:
        with pytest.raises(InputError, match="unsupported compose file version"):
            load([f], environ={})


def test_key_newer_than_version_is_refused(tmp_path):
    f = write(tmp_path, """
        version: "3.6"
        services:
          web: {image: nginx, init: true, deploy: {rollback_config: {order: start-first}}}
    """)
    with pytest.raises(InputError) as exc:
        load([f], environ={})
    text = str(exc.value)
    assert "services.web.init: needs compose file version 3.7" in text
    assert "services.web.deploy.rollback_config: needs compose file version 3.7" in text


def test_anchor_merge_keys_and_lines(tmp_path):
    f = write(tmp_path, """
        version: "3.8"
        x-base: &base
          image: nginx
          deploy: {replicas: many}
        services:
          web:
            <<: *base
    """)
    with pytest.raises(InputError) as exc:
        load([f], environ={})
    # the bad value came in through the anchor: the line is the anchor's
    assert "services.web.deploy.replicas: expected an integer" in str(exc.value)
    assert "(line 5)" in str(exc.value)


# --- .env and env_file ---------------------------------------------------------------------

def test_dotenv_beside_first_file_and_process_env_wins():
    c = load([os.path.join(FIX, "base.yml")], environ={"MODE": "shell"})
    web = c.model["services"]["web"]
    assert web["image"] == "registry.local/web:1.5"          # TAG from .env
    assert web["environment"]["MODE"] == "shell"              # process env over .env
    assert c.env_file == os.path.join(FIX, ".env")


def test_env_file_parameter_replaces_dotenv(tmp_path):
    other = tmp_path / "vars"
    other.write_text("TAG=9\n")
    c = load([os.path.join(FIX, "base.yml")], env_file=str(other), environ={})
    assert c.model["services"]["web"]["image"] == "registry.local/web:9"


def test_missing_env_file_parameter_is_an_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load([os.path.join(FIX, "base.yml")], env_file=str(tmp_path / "nope"), environ={})


def test_service_env_file_kvfile_rules():
    env = load([os.path.join(FIX, "base.yml")],
               environ={"EMPTY": "from-shell"}).model["services"]["web"]["environment"]
    assert env["FROM_FILE"] == '"quoted" '      # verbatim: quotes and trailing space kept
    assert env["SPACED"] == "1"                 # leading whitespace trimmed
    assert env["MODE"] == "dotenv"              # environment: overrides env_file
    assert env["EMPTY"] == "from-shell"         # empty value takes the deploying env's


def test_env_file_bad_key(tmp_path):
    (tmp_path / "bad.env").write_text("MY KEY=1\n")
    f = write(tmp_path, "services: {web: {image: nginx, env_file: bad.env}}\n")
    with pytest.raises(InputError, match=r"services.web.env_file\[0\]: bad.env: line 1: variable .MY KEY. contains whitespace"):
        load([f], environ={})


def test_relative_paths_against_first_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    second = write(sub, "services: {web: {volumes: ['./x:/x']}}\n", "o.yml")
    first = write(tmp_path, "services: {web: {image: nginx}}\n")
    vol = load([first, second], environ={}).model["services"]["web"]["volumes"][0]
    assert vol["source"] == str(tmp_path / "x")


# --- merging -------------------------------------------------------------------------------

def test_merge_two_files():
    c = load([os.path.join(FIX, "base.yml"), os.path.join(FIX, "override.yml")],
             environ={})
    web = c.model["services"]["web"]
    assert web["image"] == "registry.local/web:2.0"
    assert web["command"] == ["serve", "--port", "81"]               # replaced
    assert web["labels"] == {"team": "core"}
    assert web["environment"]["MODE"] == "prod" and web["environment"]["EXTRA"] == "1"
    # ports keyed by published port: 8080 replaced by the override's, 8443 added
    assert [(p.get("published"), p["target"], p.get("mode")) for p in web["ports"]] == [
        (8080, 443, "host"), (8443, 443, "ingress"), (None, 9000, "ingress")]
    # volumes keyed by target: /conf replaced
    assert {v["target"]: v.get("source") for v in web["volumes"]} == {
        "/data": "data", "/conf": os.path.join(FIX, "other")}
    assert web["read_only"] is False                     # CLI quirk corrected
    assert web["cap_add"] == ["NET_ADMIN", "SYS_TIME"]   # lists appended
    assert web["deploy"]["replicas"] == 0
    assert web["deploy"]["placement"]["constraints"] == ["node.role==worker",
                                                         "node.labels.zone==a"]
    assert web["logging"] == {"driver": "json-file",
                              "options": {"max-size": "10m", "max-file": "3"}}
    # top-level entries replaced whole
    assert c.model["networks"]["front"] == {"driver": "overlay", "internal": True}


def test_version_mismatch(tmp_path):
    a = write(tmp_path, 'version: "3.7"\nservices: {web: {image: nginx}}\n', "a.yml")
    b = write(tmp_path, 'version: "3.8"\nservices: {web: {image: nginx}}\n', "b.yml")
    with pytest.raises(InputError, match="version mismatched"):
        load([a, b], environ={})


def test_errors_in_several_files_are_all_listed(tmp_path):
    a = write(tmp_path, "services: {web: {image: nginx, deploy: {replicas: x}}}\n", "a.yml")
    b = write(tmp_path, "services: {web: {stop_grace_period: 10}}\n", "b.yml")
    with pytest.raises(InputError) as exc:
        load([a, b], environ={})
    text = str(exc.value)
    assert "2 problems" in text
    assert f"{a}: services.web.deploy.replicas" in text
    assert f"{b}: services.web.stop_grace_period: expected a duration" in text


def test_bad_yaml_names_file(tmp_path):
    f = write(tmp_path, "services: [\n")
    with pytest.raises(InputError, match=r"stack.yml: invalid YAML"):
        load([f], environ={})


def test_missing_compose_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load([str(tmp_path / "none.yml")], environ={})
