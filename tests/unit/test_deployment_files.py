"""The deployment files, checked without Docker and without a network.

Dockerfile, .dockerignore, compose.yaml, compose/toxiproxy.json and the CI workflow
(.github/workflows/loadtest.yml) are never run by this suite. They are checked here instead:
compose.yaml against the Compose specification and the workflow against GitHub's workflow
schema, both as check-jsonschema vendors them; and every file against the project itself:
the TASKMON_ variables are ones taskmon reads (with values its settings accept), the commands
are its entry points with flags its argparse accepts, the health checks ask routes its app
serves, the nox sessions the workflow calls exist, Toxiproxy forwards to the Redis service.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from argparse import Namespace
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module, resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema.validators  # type: ignore[import-untyped]  # it ships no type information
import pytest
from ruamel.yaml import YAML

from taskmon import cli
from taskmon.app import create_app
from taskmon.config import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
TOXIPROXY_CONFIG = ROOT / "compose" / "toxiproxy.json"
WORKFLOW = ROOT / ".github" / "workflows" / "loadtest.yml"
NOXFILE = ROOT / "noxfile.py"
PYPROJECT = ROOT / "pyproject.toml"
LOCUSTFILE = "loadtests/locustfile.py"
SERVICE_TARGET, LOADTEST_TARGET = "service", "loadtest"
VARIABLE = re.compile(r"\bTASKMON_[A-Z0-9_]+\b")
URL = re.compile(r"https?://[^\s'\"]+")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  what a container must listen on; nothing binds here


# --- reading the files ---------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    # YAML 1.2, as Compose and GitHub read it: a YAML 1.1 parser turns the workflow's `on:`
    # key into True, and the schema would then reject a correct file.
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def vendored_schema(name: str) -> dict[str, Any]:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str
    parent: str  # the stage's FROM image or stage name (on every instruction of the stage)


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment and blank lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    instructions: list[Instruction] = []
    stage = parent = ""
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), " ".join(arguments.split())
        if keyword == "FROM":
            parent, _, name = arguments.partition(" AS ")
            stage = name or parent
        instructions.append(Instruction(stage, keyword, arguments, parent))
    return instructions


def stage_names() -> list[str]:
    return list(dict.fromkeys(i.stage for i in dockerfile()))


def stage_chain(target: str) -> list[Instruction]:
    """Every instruction that builds `target`: its parent stages' first, then its own."""
    instructions = dockerfile()
    own = [i for i in instructions if i.stage == target]
    assert own, f"the Dockerfile has no stage {target!r}"
    parent = own[0].parent
    return (stage_chain(parent) if parent in stage_names() else []) + own


def exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list), f"not an exec-form (JSON) command: {arguments}"
    return [str(word) for word in argv]


def last(chain: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in chain if i.keyword == keyword]
    assert found, f"stage {chain[-1].stage!r} has no {keyword}"
    return found[-1]


def dockerfile_env(chain: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in (i for i in chain if i.keyword == "ENV"):
        words = shlex.split(instruction.arguments)
        if "=" not in words[0]:  # the legacy `ENV NAME value` form
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def target_of(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    return build.get("target") if isinstance(build, dict) else None


def services_built_as(target: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if target_of(s) == target}


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment; None is a name passed through from the shell (unset if not)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [entry.partition("=") for entry in env]
        return {name: value if sep else None for name, sep, value in pairs}
    return {name: None if value is None else str(value) for name, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    argv = service.get("command")
    assert isinstance(argv, list), "commands are written as lists, so no shell splits them"
    return [str(word) for word in argv]


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).rsplit(":", 1)[-1].split("/")[0]) for mapping in service["ports"]}


def healthcheck_test(service_name: str) -> list[str]:
    service = services()[service_name]
    if "healthcheck" in service:
        return [str(word) for word in service["healthcheck"]["test"]]
    target = target_of(service)
    assert target, f"{service_name} has no healthcheck (and no image of ours to inherit one)"
    return ["CMD", *healthcheck_argv(stage_chain(target))]


def healthcheck_argv(chain: list[Instruction]) -> list[str]:
    arguments = last(chain, "HEALTHCHECK").arguments
    assert " CMD " in f" {arguments} ", f"HEALTHCHECK without CMD: {arguments}"
    return exec_form(arguments.split("CMD", 1)[1])


def strings_in(path: Path) -> set[str]:
    """Every string constant of a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is str}


def taskmon_variables() -> set[str]:
    """What a taskmon process reads: every Settings field, and the few the CLI and the gunicorn
    config read themselves (docs/architecture.md, "Add a setting")."""
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    own = {
        name
        for module in ("cli.py", "gunicorn_conf.py")
        for name in strings_in(ROOT / "src" / "taskmon" / module)
        if VARIABLE.fullmatch(name)
    }
    return fields | own


def set_per_worker() -> set[str]:
    """Variables the gunicorn config assigns in each worker: a deployment's value is overwritten."""
    tree = ast.parse((ROOT / "src" / "taskmon" / "gunicorn_conf.py").read_text(encoding="utf-8"))
    return {
        target.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Subscript)
        and ast.unparse(target.value) == "os.environ"
        and isinstance(target.slice, ast.Constant)
        and isinstance(target.slice.value, str)
    }


def loadtest_variables() -> set[str]:
    return {
        name
        for path in sorted((ROOT / "loadtests").glob("*.py"))
        for name in strings_in(path)
        if VARIABLE.fullmatch(name)
    }


def workflow() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(WORKFLOW)
    return document


def workflow_steps() -> list[dict[str, Any]]:
    return [step for job in workflow()["jobs"].values() for step in job["steps"]]


def nox_sessions() -> set[str]:
    """The sessions of noxfile.py: functions decorated with nox.session (or its `name=`)."""
    sessions: set[str] = set()
    for node in ast.parse(NOXFILE.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            if ast.unparse(call.func if call else decorator) != "nox.session":
                continue
            names = [
                k.value.value
                for k in (call.keywords if call else [])
                if k.arg == "name" and isinstance(k.value, ast.Constant)
            ]
            sessions.add(str(names[0]) if names else node.name)
    return sessions


def serve_arguments(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Namespace:
    """argv as the console script would run it, through taskmon's own argparse (not exec'd)."""
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]!r} is not a console script of pyproject: {scripts}"
    module, _, function = scripts[argv[0]].partition(":")
    assert getattr(import_module(module), function) is cli.main
    seen: list[Namespace] = []

    def record(args: Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "_serve", record)
    for name in ("WEB_CONCURRENCY", "TASKMON_BIND"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert cli.main(argv[1:]) == 0
    except SystemExit as exc:
        pytest.fail(f"taskmon's argparse refuses {argv[1:]} (exit {exc.code})")
    return seen[0]


# --- against the published schemas ---------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    document = compose()
    assert not schema_errors(document, vendored_schema("compose-spec.json"))
    assert "version" not in document, "the Compose specification ignores `version`"


def test_workflow_follows_the_github_workflow_schema() -> None:
    assert not schema_errors(workflow(), vendored_schema("github-workflows.json"))


# --- against the project -------------------------------------------------------------------


@pytest.mark.usefixtures("clean_taskmon_env")
def test_every_taskmon_variable_is_one_that_taskmon_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    known = taskmon_variables()
    everywhere = known | loadtest_variables()
    for path in (DOCKERFILE, COMPOSE):
        named = set(VARIABLE.findall(path.read_text(encoding="utf-8")))
        assert named <= everywhere, f"{path.name} names what nothing reads: {named - everywhere}"

    image_env = dockerfile_env(stage_chain(SERVICE_TARGET))
    for name, service in services_built_as(SERVICE_TARGET).items():
        env = {**image_env, **environment(service)}
        taskmon_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        assert set(taskmon_env) <= known, f"{name}: not settings: {set(taskmon_env) - known}"
        overwritten = set(taskmon_env) & set_per_worker()
        assert not overwritten, f"{name}: gunicorn sets {overwritten} per worker"
        # The values must be ones the settings accept (say, redis needs a redis:// URL).
        for variable, value in taskmon_env.items():
            if value is not None:
                monkeypatch.setenv(variable, value)
        load_settings()
        for variable in taskmon_env:
            monkeypatch.delenv(variable, raising=False)

    for name, service in services_built_as(LOADTEST_TARGET).items():
        named = {k for k in environment(service) if k.startswith(ENV_PREFIX)}
        unread = named - loadtest_variables()
        assert not unread, f"{name}: loadtests/ reads none of {unread}"


def test_no_secret_is_written_into_the_files() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    # An empty default (`${TASKMON_ADMIN_TOKEN:-}`) sets the token to "", which turns the admin
    # endpoints on for an empty bearer token; only a bare pass-through leaves it unset.
    assert not re.search(r"\$\{?TASKMON_ADMIN_TOKEN", text), "the token must not be interpolated"
    for name, service in services().items():
        env = environment(service)
        assert env.get("TASKMON_ADMIN_TOKEN") is None, f"{name} writes TASKMON_ADMIN_TOKEN"
        for url in (v for v in env.values() if v and "://" in v):
            assert urlsplit(url).password is None, f"{name}: a password in {url}"
    assert not re.search(r"(?i)requirepass|password\s*[:=]", text)


def test_the_service_runs_taskmon_serve_with_four_workers_on_the_exposed_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = stage_chain(SERVICE_TARGET)
    exposed = {
        int(port.split("/")[0])
        for i in chain
        if i.keyword == "EXPOSE"
        for port in i.arguments.split()
    }
    commands = {"Dockerfile": exec_form(last(chain, "CMD").arguments)}
    commands |= {
        f"compose {name}": command(s) for name, s in services_built_as(SERVICE_TARGET).items()
    }
    assert len(commands) >= 3, "the Dockerfile and both taskmon services of compose.yaml"
    for where, argv in commands.items():
        args = serve_arguments(argv, monkeypatch)
        assert args.command == "serve", where
        assert args.workers == 4, f"{where}: gunicorn -w 4 is what taskmon is for"
        host, _, port = args.bind.rpartition(":")
        # A container's 127.0.0.1 is its own: bound there, nothing outside it could connect.
        assert host == ALL_INTERFACES, f"{where} binds {args.bind}"
        assert int(port) in exposed, f"{where}: port {port} is not EXPOSEd ({exposed})"
    for name, service in services_built_as(SERVICE_TARGET).items():
        assert container_ports(service) <= exposed, f"{name} publishes a port nothing listens on"


def test_locust_runs_the_locustfile_against_the_taskmon_service() -> None:
    chain = stage_chain(LOADTEST_TARGET)
    locusts = services_built_as(LOADTEST_TARGET)
    assert locusts, "compose.yaml builds no service from the loadtest stage"
    commands = {"Dockerfile": exec_form(last(chain, "CMD").arguments)}
    commands |= {f"compose {name}": command(s) for name, s in locusts.items()}
    for where, argv in commands.items():
        assert argv[0] == "locust", where
        assert argv[argv.index("-f") + 1] == LOCUSTFILE, where
        host = urlsplit(argv[argv.index("--host") + 1])
        target = services_built_as(SERVICE_TARGET).get(host.hostname or "")
        assert target is not None, f"{where}: --host {host.geturl()} is no taskmon service"
        bind = command(target)[command(target).index("--bind") + 1]
        assert host.port == int(bind.rpartition(":")[2]), f"{where}: taskmon binds {bind}"
    runs = " ; ".join(i.arguments for i in chain if i.keyword == "RUN")
    assert "pip install --group load" in runs, "Locust comes from pyproject's load group"
    groups = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["dependency-groups"]
    assert any(str(req).startswith("locust") for req in groups["load"])
    copied = [i.arguments.split()[0] for i in chain if i.keyword == "COPY"]
    assert LOCUSTFILE.partition("/")[0] in copied, "the loadtest image lacks loadtests/"
    assert "PYTHONPATH" in dockerfile_env(chain), "loadtests/ is imported as a package"


def test_every_nox_session_the_workflow_calls_exists() -> None:
    sessions = nox_sessions()
    called = [
        name
        for step in workflow_steps()
        for name in re.findall(r"\bnox\s+(?:-s|--sessions?)\s+([\w-]+)", step.get("run", ""))
    ]
    assert {"tests", "loadtest"} <= set(called), called
    missing = sorted(set(called) - sessions)
    assert not missing, f"the workflow calls nox sessions noxfile.py lacks: {missing}"


def test_the_workflow_runs_the_project_as_its_ci_does() -> None:
    job = next(iter(workflow()["jobs"].values()))
    assert job["runs-on"] == "ubuntu-latest"
    steps = workflow_steps()
    python = [s["with"]["python-version"] for s in steps if "setup-python" in s.get("uses", "")]
    assert python == ["3.11"], "a quoted 3.11 (unquoted, YAML reads 3.10 as 3.1)"
    runs = [s.get("run", "") for s in steps]
    apt = next(r for r in runs if "apt-get install" in r)
    assert {"redis-server", "espeak-ng"} <= set(apt.split())
    assert any(re.search(r"pip install .*nox", r) for r in runs)
    order = [r for r in runs if "nox -s" in r]
    assert "nox -s tests" in order[0], "the tests come before any load run"
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload, "no artifact upload"
    assert upload[-1].get("if") == "always()", "the reports of a failed run matter most"
    assert upload[-1]["with"]["path"].rstrip("/") == "reports"
    # The rehearsal runs after the load runs, and its report is uploaded with theirs.
    assert "nox -s rehearsal" in order[-1], order
    rehearsal = next(i for i, s in enumerate(steps) if "nox -s rehearsal" in s.get("run", ""))
    assert rehearsal < steps.index(upload[-1])


def negative_step() -> str:
    found = [s["run"] for s in workflow_steps() if "--backend memory" in s.get("run", "")]
    assert len(found) == 1, "one step runs the memory-mode load test"
    return str(found[0])


FAKE_NOX = """\
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1] if "--out" in args else "reports/loadtest")
summary = os.environ["FAKE_SUMMARY_CODE"]
if summary:
    (out / "run").mkdir(parents=True)
    (out / "run" / "summary.json").write_text(json.dumps({"exit_code": int(summary)}))
sys.exit(int(os.environ["FAKE_NOX_EXIT"]))
"""


def run_step(script: str, tmp_path: Path, nox_exit: int, summary_code: int | None) -> int:
    """The step under GitHub's `bash -e`, with a nox that answers as told."""
    bin_dir, work = tmp_path / "bin", tmp_path / f"work-{nox_exit}-{summary_code}"
    bin_dir.mkdir(exist_ok=True)
    work.mkdir()
    nox = bin_dir / "nox"
    nox.write_text(f"#!{sys.executable}\n{FAKE_NOX}")
    nox.chmod(0o755)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_NOX_EXIT": str(nox_exit),
        "FAKE_SUMMARY_CODE": "" if summary_code is None else str(summary_code),
    }
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def test_the_memory_mode_step_fails_unless_an_invariant_is_broken(tmp_path: Path) -> None:
    script = negative_step()
    assert "nox -s loadtest -- --shape smoke --backend memory" in script
    assert run_step(script, tmp_path, nox_exit=0, summary_code=0) != 0, "a pass must fail CI"
    assert run_step(script, tmp_path, nox_exit=1, summary_code=1) == 0, "exit 1 is the point"
    assert run_step(script, tmp_path, nox_exit=1, summary_code=3) != 0, "3 proves nothing"
    assert run_step(script, tmp_path, nox_exit=1, summary_code=None) != 0, "no report either"


def test_toxiproxy_forwards_to_the_redis_service() -> None:
    every = services()
    toxiproxy = every["toxiproxy"]
    flags: dict[str, str] = {}
    for word in command(toxiproxy):
        name, _, value = word.lstrip("-").partition("=")
        flags[name] = value
    assert flags.get("host") == ALL_INTERFACES, (
        "the API must be reachable from outside its container"
    )
    mounts = {
        target: (COMPOSE.parent / source).resolve()
        for source, target, *_ in (str(v).split(":") for v in toxiproxy["volumes"])
    }
    assert mounts.get(flags["config"]) == TOXIPROXY_CONFIG, "-config is not the repository's file"
    assert 8474 in container_ports(toxiproxy), "Toxiproxy's API port"

    proxies = json.loads(TOXIPROXY_CONFIG.read_text(encoding="utf-8"))
    assert proxies, "compose/toxiproxy.json creates no proxy"
    redis_services = {n for n, s in every.items() if str(s.get("image", "")).startswith("redis:")}
    chaos_urls = [
        urlsplit(url)
        for service in every.values()
        if "chaos" in service.get("profiles", []) and target_of(service) == SERVICE_TARGET
        for url in [environment(service)["TASKMON_REDIS_URL"]]
        if url
    ]
    assert chaos_urls, "no taskmon service goes through Toxiproxy"
    for proxy in proxies:
        upstream = urlsplit(f"//{proxy['upstream']}")
        assert upstream.hostname in redis_services, f"{proxy['name']} forwards to {upstream}"
        redis_command = " ".join(every[upstream.hostname].get("command") or [])
        port = re.search(r"--port\s+(\d+)", redis_command)
        assert upstream.port == (int(port[1]) if port else 6379), proxy["upstream"]
        listen = urlsplit(f"//{proxy['listen']}")
        assert listen.hostname in {ALL_INTERFACES, "::"}, "other containers must reach the proxy"
        assert proxy.get("enabled", True)
    listens = {(urlsplit(f"//{p['listen']}").port) for p in proxies}
    for url in chaos_urls:
        assert url.hostname == "toxiproxy", f"{url.geturl()} bypasses Toxiproxy"
        assert url.port in listens, f"{url.geturl()}: Toxiproxy listens on {listens}"
    # The health check names a proxy of the file, so healthy means "forwarding".
    assert healthcheck_test("toxiproxy")[-1] in {p["name"] for p in proxies}


@pytest.fixture
def app_routes(tmp_path: Path, clean_taskmon_env: None) -> Iterator[Any]:
    app = create_app({"backend": "memory", "engine": "tone", "result_dir": str(tmp_path)})
    yield app
    app.extensions["taskmon"].close()


def health_urls() -> dict[str, str]:
    found = {"Dockerfile": healthcheck_argv(stage_chain(SERVICE_TARGET))}
    found |= {f"compose {n}": healthcheck_test(n) for n in services_built_as(SERVICE_TARGET)}
    urls = {where: URL.findall(" ".join(argv)) for where, argv in found.items()}
    assert all(len(u) == 1 for u in urls.values()), urls
    return {where: u[0] for where, u in urls.items()}


def test_the_health_checks_ask_routes_the_service_answers(app_routes: Any) -> None:
    client = app_routes.test_client()
    for where, url in health_urls().items():
        parts = urlsplit(url)
        assert parts.hostname in {"127.0.0.1", "localhost"}, f"{where} asks {url}"
        assert parts.port == 8000, f"{where}: {url} is not the port taskmon serve binds"
        answer = client.get(parts.path)
        assert answer.status_code == 200, f"{where}: GET {parts.path} answers {answer.status}"
    assert "/healthz" in health_urls()["Dockerfile"], "the image's check is liveness"


def test_redis_persists_and_every_dependency_is_waited_for_until_healthy() -> None:
    every = services()
    redis = every["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert re.search(r"--appendonly\s+yes", " ".join(command(redis)))
    assert any(str(v).endswith(":/data") for v in redis["volumes"]), "the AOF must outlive it"
    assert "redis-cli ping" in " ".join(healthcheck_test("redis"))
    declared = set(compose().get("volumes") or {})
    for name, service in every.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}: {rule}"
            assert healthcheck_test(dependency), dependency
            # A service may only wait for one that starts with it, in every profile it is in.
            needed, has = (
                set(every[dependency].get("profiles", [])),
                set(service.get("profiles", [])),
            )
            assert not needed or (has and has <= needed), f"{name} needs {dependency} {needed}"


def test_the_profiles_are_default_chaos_and_loadtest() -> None:
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services().items()}
    assert profiles == {
        "redis": (),
        "taskmon": (),
        "toxiproxy": ("chaos",),
        "taskmon-chaos": ("chaos",),
        "locust": ("loadtest",),
    }
    for name, service in services_built_as(SERVICE_TARGET).items():
        env = environment(service)
        assert env.get("TASKMON_BACKEND") == "redis", f"{name}: memory mode breaks the cap"
        targets = {str(v).split(":")[1] for v in service["volumes"]}
        assert env.get("TASKMON_RESULT_DIR") in targets, f"{name}: results are not on a volume"
    stages = stage_names()
    for name, service in services().items():
        target = target_of(service)
        if target is not None:
            assert target in stages, f"{name} builds stage {target!r}, which the Dockerfile lacks"


def test_the_image_has_espeak_ng_runs_as_a_user_and_builds_the_service_by_default() -> None:
    instructions = dockerfile()
    assert instructions[0].parent.startswith("python:3.11-slim")
    assert stage_names()[-1] == SERVICE_TARGET, "a plain `docker build .` must give the service"
    base = stage_chain(SERVICE_TARGET)
    runs = [i.arguments for i in base if i.keyword == "RUN"]
    assert any(re.search(r"apt-get install\b.*\bespeak-ng\b", run) for run in runs)
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs), "the package itself"
    for target in (SERVICE_TARGET, LOADTEST_TARGET):
        user = last(stage_chain(target), "USER").arguments.split(":")[0]
        assert user not in {"root", "0"}, f"stage {target} runs as root"
    result_dir = dockerfile_env(base)["TASKMON_RESULT_DIR"]
    assert any(f"mkdir -p {result_dir}" in run for run in runs), "the volume takes its owner"


def test_dockerignore_keeps_local_state_out_and_lets_every_copy_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".nox", "reports", "mutants"):
        assert needed in patterns, f".dockerignore lets {needed} into the build context"
    for instruction in (i for i in dockerfile() if i.keyword == "COPY"):
        for source in instruction.arguments.split()[:-1]:
            if source.startswith("--"):
                continue
            excluded = [p for p in patterns if fnmatch.fnmatch(source.rstrip("/"), p)]
            assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
