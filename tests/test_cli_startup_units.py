"""The CLI must start fast: building the parser imports none of the heavy libraries."""
import subprocess
import sys


def test_parser_imports_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, cli; cli.build_parser(); print(sorted(m for m in "
         "('docker','paramiko','fabric','digitalocean','requests','rich') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_every_command_and_exit_codes():
    out = subprocess.run([sys.executable, "-c", "import cli, sys; sys.exit(cli.main(['--help']))"],
                         capture_output=True, text=True).stdout
    for cmd in ("lab", "up", "plan", "down", "status", "deploy", "rm", "config", "image-load"):
        assert cmd in out
    assert "exit codes" in out and "12" in out


def test_unknown_flag_exits_2():
    p = subprocess.run([sys.executable, "-c", "import cli, sys; sys.exit(cli.main(['up', '--bogus']))"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--bogus" in p.stderr


def test_cluster_commands_do_not_load_the_stack_machinery():
    """`up` with no stacks, `status` and `down` run from cron as new processes: the library's
    entry module loads the compose loader, planner and applier only when a name needs them."""
    code = ("import sys; from stacks import api; "
            "heavy = ('stacks.operations.deploy', 'stacks.compose.loader', "
            "'stacks.plan_apply.apply', 'yaml'); "
            "print(sorted(m for m in heavy if m in sys.modules)); "
            "api.DeployOptions, api.RedeployOptions, api.UnlockOptions, api.StackOptions; "
            "print('stacks.operations.deploy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"
