"""The agent's loop (`swarmsmith agent run`, inside its service task on a manager): fetch the
branch, gather the facts, ask stacks/agent/decide.py, carry the answer out, keep the status.

Everything goes through the code the command line uses: the cluster file's `stacks:` read by
inventory/clusterfile.py, the compose files by load_stack, plans and rollouts by redeploy
(under the stack lock, into the same audit history, command "agent", with the commit), the
engine through provision/engine_api/adapter.py on the mounted socket (connect_local). A stack
taken out of the cluster file is reported, or removed as `swarmsmith rm` removes it (under its
lock) with `prune`; the stacks the agent deployed are kept in its status ("managed"), so one
deployed by hand is never taken for one taken out of the file.

The agent's runs hold stack locks as host "swarmsmith-agent" with the task's container as its
"boot": swarm runs one agent at a time, so a lock left by another agent container is a killed
one's (its container is gone with it), broken at once and said so in the audit record.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from provision.base.errors import InputError, LockedError, SwarmsmithError
from stacks.agent import decide as D
from stacks.agent.status import public_url, read_status, utc_iso, write_status

AGENT_HOST = "swarmsmith-agent"
ENV = "SWARMSMITH_AGENT_"
CLUSTER_FILE_STACK = "swarmsmith-agent"     # audit records about the cluster file itself


@dataclass
class AgentConfig:
    repo: str
    branch: str = "main"
    path: str = "."
    interval: float = 60.0
    correct_drift: bool = False
    prune: bool = False             # remove stacks taken out of the cluster file (else report)
    deploy_key: str = ""            # a file (the mounted secret), never its contents
    known_hosts: str = ""           # a file (the mounted config)
    timeout: float = 300.0          # watch timeout per rollout
    workdir: str = "/var/lib/swarmsmith-agent"
    registries: dict = field(default_factory=dict)   # host -> {username, password_file}

    @classmethod
    def from_env(cls, env=None) -> "AgentConfig":
        env = os.environ if env is None else env
        if not env.get(ENV + "REPO"):
            raise InputError(f"{ENV}REPO is not set: `agent run` runs inside the agent's "
                             "service (swarmsmith agent install)")
        try:
            return cls(repo=env[ENV + "REPO"], branch=env.get(ENV + "BRANCH", "main"),
                       path=env.get(ENV + "PATH", "."),
                       interval=float(env.get(ENV + "INTERVAL", "60")),
                       correct_drift=env.get(ENV + "CORRECT_DRIFT", "") == "true",
                       prune=env.get(ENV + "PRUNE", "") == "true",
                       deploy_key=env.get(ENV + "DEPLOY_KEY", ""),
                       known_hosts=env.get(ENV + "KNOWN_HOSTS", ""),
                       timeout=float(env.get(ENV + "TIMEOUT", "300")),
                       workdir=env.get(ENV + "WORKDIR", "/var/lib/swarmsmith-agent"),
                       registries=json.loads(env.get(ENV + "REGISTRIES") or "{}"))
        except ValueError as e:
            raise InputError(f"agent settings in the environment: {e}") from None

    def cluster_file(self, checkout: str) -> str:
        p = os.path.normpath(os.path.join(checkout, self.path))
        return p if p.endswith((".yml", ".yaml")) else os.path.join(p, "swarmsmith.yml")

    def credentials(self):
        """Registry credentials for the deploys: the cluster file's registries as installed,
        each password read from its secret file when an image of that registry is deployed."""
        from provision.engine_api.registry_auth import Credentials
        return Credentials(self.registries, docker_config=os.path.join(
            self.workdir, "no-docker-config.json"))


class GitError(SwarmsmithError):
    pass


class Git:
    """The repository, through the git command (commands as data: argv lists, the key only
    ever a path)."""

    def __init__(self, cfg: AgentConfig, run=subprocess.run):
        self.cfg, self.run_ = cfg, run
        self.dir = os.path.join(cfg.workdir, "checkout")

    def env(self) -> dict:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        if self.cfg.deploy_key or self.cfg.known_hosts:
            ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
            if self.cfg.deploy_key:
                ssh += ["-i", self.cfg.deploy_key, "-o", "IdentitiesOnly=yes"]
            if self.cfg.known_hosts:
                ssh += ["-o", "StrictHostKeyChecking=yes",
                        "-o", f"UserKnownHostsFile={self.cfg.known_hosts}"]
            env["GIT_SSH_COMMAND"] = " ".join(ssh)
        return env

    def git(self, *args: str, timeout: float = 120) -> str:
        argv = ["git", "-C", self.dir, *args]
        try:
            proc = self.run_(argv, capture_output=True, text=True, timeout=timeout,
                             env=self.env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]}: no answer in {timeout:.0f} s") from None
        except OSError as e:
            raise GitError(f"git {args[0]}: {e.strerror}") from None
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            raise GitError(f"git {args[0]} exited {proc.returncode}: "
                           f"{(tail[-1] if tail else 'no output')[:300]}")
        return proc.stdout

    def fetch(self) -> str:
        """The branch's head commit, fetched (the whole history: a restarted agent can check
        out the commit it reconciled last)."""
        if not os.path.isdir(os.path.join(self.dir, ".git")):
            os.makedirs(self.dir, exist_ok=True)
            self.git("init", "-q")
        self.git("fetch", "-q", "--no-tags", self.cfg.repo,
                 f"+refs/heads/{self.cfg.branch}:refs/remotes/agent/{self.cfg.branch}")
        return self.git("rev-parse", f"refs/remotes/agent/{self.cfg.branch}").strip()

    def checkout(self, commit: str) -> str:
        self.git("checkout", "-q", "--force", "--detach", commit)
        self.git("clean", "-q", "-fdx")
        return self.dir


@dataclass
class StackOutcome:
    action: str
    outcome: str            # converged | unchanged | drift | corrected | refused | waiting | ...
    detail: str = ""
    drift: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"action": self.action, "outcome": self.outcome, "detail": self.detail,
                "drift": self.drift}


def plan_changes(plan) -> tuple:
    """What a plan would change, one line per object: "update service web_api: Env"."""
    from stacks.plan_apply.plan import UNCHANGED
    out = []
    for a in plan.actions:
        if a.action == UNCHANGED:
            continue
        paths = sorted({c.path for c in a.changes or []})
        out.append(f"{a.action} {a.kind} {a.name}" + (f": {', '.join(paths)}" if paths else ""))
    return tuple(out)


class Agent:
    def __init__(self, cfg: AgentConfig, engine, git=None, *, clock=time.time,
                 sleep=time.sleep, say=None, holder=None, alive=None):
        from provision.swarm.lock import Holder, pid_alive
        self.cfg, self.engine = cfg, engine
        self.git = git or Git(cfg)
        self.clock, self.sleep = clock, sleep
        self.say = say or (lambda line: None)     # the command line prints the log lines
        self.holder = holder or Holder(AGENT_HOST, socket.gethostname(), os.getpid())
        self.alive = alive or pid_alive
        self.reconciled = ""
        self.refused = ""
        self.refused_error = ""
        self.last_drift_check: float | None = None
        self.reported: dict[str, tuple] = {}
        self.managed: set[str] = set()          # stacks deployed from the cluster file
        self.gone_reported: set[str] = set()    # gone stacks already recorded
        self.last_status: dict = {}
        self.last_error = ""

    # --- state kept in the swarm ----------------------------------------------------------
    def resume(self) -> None:
        """Pick up where the previous agent left off (a restarted task)."""
        st = read_status(self.engine) or {}
        self.reconciled = st.get("commit") or ""
        refused = st.get("refused") or {}
        self.refused, self.refused_error = refused.get("commit") or "", refused.get("error", "")
        self.reported = {name: tuple(s.get("drift") or ())
                         for name, s in (st.get("stacks") or {}).items()
                         if s.get("outcome") == "drift"}
        stacks = st.get("stacks") or {}
        # a status from before "managed" was kept: the stacks of its last reconcile
        self.managed = set(st.get("managed") or (n for n in stacks if n != CLUSTER_FILE_STACK))
        self.gone_reported = {n for n, s in stacks.items() if s.get("outcome") == D.GONE}
        self.last_status = st
        if self.reconciled:
            self.log(f"resuming: last reconciled commit {self.reconciled[:12]}")

    def log(self, line: str) -> None:
        self.say(f"{utc_iso(self.clock())} {line}")

    def write_status(self, reason: str, head: str, outcomes: dict, error: str = "") -> None:
        st = {"time": utc_iso(self.clock()), "reason": reason, "head": head,
              "commit": self.reconciled, "error": error,
              "refused": {"commit": self.refused, "error": self.refused_error}
              if self.refused else None,
              "stacks": {k: v.to_dict() for k, v in outcomes.items()},
              "repo": public_url(self.cfg.repo), "branch": self.cfg.branch,
              "path": self.cfg.path, "interval": self.cfg.interval,
              "correct_drift": self.cfg.correct_drift, "prune": self.cfg.prune,
              "managed": sorted(self.managed), "agent": self.holder.boot_id}
        try:
            write_status(self.engine, st)
            self.last_status = st
        except SwarmsmithError as e:
            self.log(f"could not write the status: {e}")

    # --- one poll -------------------------------------------------------------------------
    def poll(self) -> str:
        now = self.clock()
        error = ""
        try:
            head = self.git.fetch()
        except SwarmsmithError as e:
            head, error = None, str(e)
        reason = D.poll_decision(D.PollFacts(now, head, self.reconciled, self.refused,
                                             self.last_drift_check, self.cfg.interval))
        if reason == D.FETCH_FAILED:
            if error != self.last_error:
                self.log(f"fetch failed: {error}")
                self.write_status(reason, "", {}, error)
            self.last_error = error
            return reason
        self.last_error = ""
        if reason == D.IDLE:
            return reason
        commit = head if reason == D.COMMIT else self.reconciled
        if not commit:        # nothing reconciled yet and the head was refused
            self.last_drift_check = now
            return reason
        outcomes = self.reconcile(reason, commit, now)
        self.write_status(reason, head, outcomes)
        return reason

    def reconcile(self, reason: str, commit: str, now: float) -> dict:
        from inventory.clusterfile import load_stacks
        from stacks.operations.deploy import StackOptions, load_stack

        if reason == D.COMMIT:
            self.log(f"commit {commit[:12]} on {self.cfg.branch}: planning every stack")
        checkout = self.git.checkout(commit)
        facts, loaded = {}, {}
        try:
            refs = load_stacks(self.cfg.cluster_file(checkout))
        except InputError as e:
            refs, cluster_error = [], self._relative(str(e), checkout)
            facts[CLUSTER_FILE_STACK] = D.StackFacts(CLUSTER_FILE_STACK, load_error=cluster_error)
        for ref in refs:
            try:
                loaded[ref.name] = load_stack(ref.name, ref.compose,
                                              StackOptions(env_file=ref.env_file))
                facts[ref.name] = self._facts(reason, loaded[ref.name], now)
            except InputError as e:
                facts[ref.name] = D.StackFacts(ref.name, load_error=self._relative(str(e),
                                                                                 checkout))
        decisions = {n: D.stack_decision(reason, f, correct_drift=self.cfg.correct_drift)
                     for n, f in facts.items()}
        outcomes: dict = {}
        if D.commit_refused(decisions):
            self._refuse(commit, decisions, outcomes)
            if self.reconciled:
                self.git.checkout(self.reconciled)
            return outcomes
        for name, d in decisions.items():
            outcomes[name] = self._carry_out(reason, commit, name, d, loaded.get(name))
        wanted = {ref.name for ref in refs}
        # a cluster file that did not load names no stacks: that is no reason to remove any
        gone = {} if CLUSTER_FILE_STACK in facts else self._gone(wanted, now)
        for name, d in gone.items():
            outcomes[name] = self._carry_out_gone(reason, commit, name, d)
        self.managed = wanted | {n for n, o in outcomes.items()
                                 if n not in wanted and o.outcome != "pruned"}
        self.gone_reported &= {n for n, o in outcomes.items() if o.outcome == D.GONE}
        done = {n: D.StackDecision(o.action) for n, o in outcomes.items()}
        if D.commit_done(reason, done):
            self.reconciled = commit
            self.refused, self.refused_error = "", ""
        elif reason == D.COMMIT and D.commit_refused(done):   # refused by a plan's problems
            self.refused = commit
            self.refused_error = next(o.detail for o in outcomes.values()
                                      if o.action == D.REFUSE)
        self.last_drift_check = now
        return outcomes

    @staticmethod
    def _relative(message: str, checkout: str) -> str:
        """Errors name files as they are in the repository, not in the agent's checkout."""
        return message.replace(checkout.rstrip("/") + "/", "")

    def _lock_state(self, stack: str, now: float) -> str:
        from provision.swarm.lock import SwarmLock
        info = SwarmLock(self.engine, stack, me=self.holder, alive=self.alive).holder()
        if info is None:
            return D.LOCK_FREE
        return D.LOCK_DEAD if (info.stale(now) or info.local_state(
            self.holder, self.alive) == "dead") else D.LOCK_HELD

    def _facts(self, reason: str, loaded, now: float) -> D.StackFacts:
        state = self._lock_state(loaded.name, now)
        changes: tuple = ()
        if reason == D.DRIFT and state == D.LOCK_FREE:
            from stacks.operations.redeploy import plan_redeploy_stack
            plan = plan_redeploy_stack(loaded, options=self._options(), engine=self.engine).plan
            if plan.problems:
                return D.StackFacts(loaded.name, load_error="; ".join(plan.problems), lock=state)
            changes = plan_changes(plan)
        return D.StackFacts(loaded.name, lock=state, changes=changes,
                            reported_drift=self.reported.get(loaded.name, ()))

    def _gone(self, wanted: set, now: float) -> dict:
        """name -> decision, for the stacks taken out of the cluster file that still run."""
        from stacks.specs.convert import STACK_LABEL
        if not self.managed - wanted:      # the usual case: no listing needed
            return {}
        cur = self.engine.current()
        deployed = {(labels or {}).get(STACK_LABEL) for labels in
                    [s["Spec"].get("Labels") for s in cur.services]
                    + [o["Spec"].get("Labels") for o in cur.secrets + cur.configs]
                    + [n.get("Labels") for n in cur.networks]} - {None}
        return {name: D.gone_decision(D.GoneFacts(
                    name, self._lock_state(name, now) if self.cfg.prune else D.LOCK_FREE,
                    name in self.gone_reported), prune=self.cfg.prune)
                for name in D.gone_stacks(self.managed, wanted, deployed)}

    def _carry_out_gone(self, reason: str, commit: str, name: str,
                        d: D.StackDecision) -> StackOutcome:
        from stacks.operations.audit import audit_record, keep_record
        if d.action == D.WAIT:
            self.log(f"stack {name}: {d.why}; next poll")
            return StackOutcome(d.action, "waiting", d.why)
        said = f"stack {name} is {d.why}; not removed (agent.prune is off)"
        if d.action == D.KNOWN_GONE:
            return StackOutcome(d.action, D.GONE, said)
        if d.action == D.GONE:
            self.log(said)
            keep_record(self.engine, None, audit_record(
                "agent", name, phase="gone", commit=commit, reason=reason, changes=[],
                detail=said), self.log)
            self.gone_reported.add(name)
            return StackOutcome(d.action, D.GONE, said)
        return self._prune(reason, commit, name)

    def _prune(self, reason: str, commit: str, name: str) -> StackOutcome:
        from provision.swarm.lock import SwarmLock
        from stacks.operations.audit import audit_record, keep_record
        from stacks.operations.deploy import rm_stack
        notes: list[str] = []

        def note(line: str) -> None:
            notes.append(line)
            self.log(line)
        started = self.clock()
        try:
            with SwarmLock(self.engine, name, wait=0, me=self.holder, alive=self.alive,
                           notify=note):
                result = rm_stack(name, engine=self.engine)
        except LockedError as e:
            self.log(f"stack {name}: {e}; next poll")
            return StackOutcome(D.WAIT, "waiting", str(e))
        except SwarmsmithError as e:
            self.log(f"stack {name}: could not remove it: {e}")
            return StackOutcome(D.PRUNE, "failed", str(e).splitlines()[0])
        done = list(result.applied.done) if result.found else []
        keep_record(self.engine, None, audit_record(
            "agent", name, phase="pruned", commit=commit, reason=reason, exit_code=0,
            seconds=round(self.clock() - started, 2), changes=done,
            detail=f"stack {name} removed: {D.GONE_WHY}",
            **({"notes": notes} if notes else {})), self.log)
        self.log(f"stack {name}: removed, {D.GONE_WHY} ({len(done)} changes)")
        return StackOutcome(D.PRUNE, "pruned", "; ".join(done)[:500])

    def _options(self):
        from stacks.operations.redeploy import RedeployOptions
        return RedeployOptions(lock_wait=0, lock_holder=self.holder, timeout=self.cfg.timeout)

    def _refuse(self, commit: str, decisions: dict, outcomes: dict) -> None:
        from stacks.operations.audit import audit_record, keep_record
        errors = {n: d.why for n, d in decisions.items() if d.action == D.REFUSE}
        first = next(iter(errors.values()))
        if commit != self.refused:
            self.log(f"commit {commit[:12]} refused, nothing changed: {first}")
            for name, why in errors.items():
                keep_record(self.engine, None, audit_record(
                    "agent", name, phase="refused", commit=commit, exit_code=2, error=why,
                    changes=[]), self.log)
        self.refused, self.refused_error = commit, first
        for name, d in decisions.items():
            outcomes[name] = StackOutcome(d.action, "refused" if d.action == D.REFUSE
                                          else "unchanged", d.why if d.action == D.REFUSE
                                          else "another stack's files of this commit are bad")

    def _carry_out(self, reason, commit, name, d: D.StackDecision, loaded) -> StackOutcome:
        from stacks.operations.audit import audit_record, keep_record
        if d.action in (D.APPLY, D.CORRECT):
            return self._deploy(reason, commit, name, d, loaded)
        if d.action == D.REPORT:
            self.log(f"stack {name}: drift (not corrected): {'; '.join(d.drift)}")
            keep_record(self.engine, None, audit_record(
                "agent", name, phase="drift", commit=commit, drift=list(d.drift),
                corrected=False, changes=[]), self.log)
            self.reported[name] = d.drift
            return StackOutcome(d.action, "drift", "reported", list(d.drift))
        if d.action == D.KNOWN_DRIFT:
            return StackOutcome(d.action, "drift", "reported before", list(d.drift))
        if d.action == D.WAIT:
            self.log(f"stack {name}: {d.why}; next poll")
            return StackOutcome(d.action, "waiting", d.why)
        if d.action == D.SKIP:
            return StackOutcome(d.action, "skipped", d.why)
        self.reported.pop(name, None)
        return StackOutcome(d.action, "unchanged")

    def _deploy(self, reason, commit, name, d: D.StackDecision, loaded) -> StackOutcome:
        from provision.base.progress import Notice
        from stacks.operations.audit import audit_record, keep_record
        from stacks.operations.redeploy import redeploy_stack
        notes: list[str] = []

        def progress(event) -> None:
            if isinstance(event, Notice):
                notes.append(event.message)
                self.log(event.message)

        def extra() -> dict:
            out = {"commit": commit, "reason": reason}
            if d.drift:
                out.update(drift=list(d.drift), corrected=True)
            if notes:
                out["notes"] = list(notes)
            return out

        if d.drift:
            self.log(f"stack {name}: drift, correcting: {'; '.join(d.drift)}")
        try:
            result = redeploy_stack(loaded, options=self._options(), engine=self.engine,
                                    on_progress=progress, command="agent", audit_extra=extra)
        except LockedError as e:
            self.log(f"stack {name}: {e}; next poll")
            return StackOutcome(D.WAIT, "waiting", str(e))
        except InputError as e:
            self.log(f"stack {name}: refused: {e}")
            return StackOutcome(D.REFUSE, "refused", str(e))
        except SwarmsmithError as e:
            self.log(f"stack {name}: failed: {e}")
            return StackOutcome(d.action, "failed", str(e).splitlines()[0])
        wrote = result.plan.has_changes or result.watch is not None or result.exit_code
        if not wrote and notes:
            # a killed agent's run changed everything already: its "start" record gets the
            # end it never wrote, so the commit's history is complete
            keep_record(self.engine, None, audit_record(
                "agent", name, phase="end", exit_code=0, seconds=0.0, changes=[], **extra()),
                self.log)
        self.reported.pop(name, None)
        outcome = {0: "converged" if wrote else "unchanged"}.get(
            result.exit_code, f"exit {result.exit_code}")
        if d.drift and result.exit_code == 0:
            outcome = "corrected"
        self.log(f"stack {name}: {outcome} ({len(result.applied.done)} changes)")
        return StackOutcome(d.action, outcome, "; ".join(result.applied.done)[:500],
                            list(d.drift))

    def run_forever(self, polls: int | None = None) -> None:
        self.resume()
        self.log(f"following {public_url(self.cfg.repo)} branch {self.cfg.branch} every "
                 f"{self.cfg.interval:g} s (drift {'corrected' if self.cfg.correct_drift else 'reported'})")
        n = 0
        while polls is None or n < polls:
            try:
                self.poll()
            except SwarmsmithError as e:       # the engine did not answer: next poll
                self.log(f"poll failed: {e}")
            except Exception as e:  # noqa: BLE001 - a bug must not stop the cluster's agent
                first = (str(e).strip().splitlines() or [""])[0][:300]
                self.log(f"poll failed: unexpected {type(e).__name__}: {first}")
            n += 1
            self.sleep(self.cfg.interval)


def exit_on_sigterm() -> None:
    """The agent is its container's first process, for which the kernel ignores SIGTERM unless
    a handler is set: without one, `docker service update` and every engine stop waited the
    whole stop grace period and then killed it. The handler ends the process the way a
    Python exit does, so the stack lock of a run in progress is released on the way out
    (the next agent finds the rollout in flight and carries on)."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)

