"""Every code block of the docs (README.md, docs/*.md, examples/*/README.md) is run by a test.

Each fenced block needs a language tag; what "run" means depends on it:

- ``python``: executed (``exec``) in a fresh namespace, with the project importable. A block
  whose first line is ``# path/to/module.py`` is an excerpt of that module: it is compiled, its
  imports are executed, and every other name it reads must exist in that module. The README's
  behaviour is then run over an event on a real Redis; the consumers guide's blocks are also run
  over events in tests/test_example_keywords.py.
- ``sh``: every command is checked, not run (they start services, clusters and builds):
  ``wecom-bus …`` (also after ``kubectl exec … --`` and ``docker compose run <service>``)
  parses with the CLI's own parser; ``make X`` names a Makefile target; ``python -m bench …``
  uses sub-commands, flags and choices bench's ``--help`` lists; ``pytest``, ``cp``,
  ``kubectl apply -k`` and ``docker build`` name paths that exist; a ``curl`` URL's path is
  served by a route of the ingress, the sender or the console (their apps' route tables);
  ``docker compose`` names services of docker-compose.yml; any other program must be in
  ``EXTERNAL`` (tools a user brings).
- ``toml`` and ``yaml``: parsed (the rules files are also loaded by the keywords example's
  loader in tests/test_example_keywords.py).
- ``promql``: each line passes ``promtool check rules`` and names only metrics docs/metrics.md
  lists.
- ``dockerfile``: every instruction is one Docker knows, and ``FROM wecom-bus:<version>`` is
  this project's version.
- ``text``: diagrams, file trees and sample output; not code, nothing is run.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from redis.asyncio import Redis
from starlette.routing import BaseRoute, Mount, Route

from services.cli import build_parser
from services.console.app import create_app as create_console
from services.console.auth import Access
from services.ingress.app import create_app as create_ingress
from services.sender.api import create_api
from shared.bus import Router
from shared.bus.testing import run_events, text_message, texts
from shared.config import load_settings
from shared.errors import SchemaError
from shared.schemas.outbound import TextSend, split_request
from tests import helpers
from tests.test_metrics_doc import documented
from tests.test_monitoring import run_promtool

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES += sorted((ROOT / "examples").glob("*/README.md"))
KINDS = {"python", "sh", "toml", "yaml", "promql", "dockerfile", "text"}
FENCE = re.compile(r"^( *)```(\S*)\n(.*?)^\1```", re.M | re.S)

# Programs the docs show that the project does not provide; they are not run here.
EXTERNAL = {"kubectl", "openssl", "redis-cli"}
SHELL_WORDS = {"do", "done", "then", "fi"}
DOCKER_INSTRUCTIONS = {
    *("FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME"),
    *("USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"),
}


def blocks(*kinds: str) -> Iterator[tuple[str, str, str]]:
    """(where, language, code) of every fenced block; ``where`` is ``page:line``."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            code = "\n".join(x.removeprefix(match.group(1)) for x in match.group(3).splitlines())
            if not kinds or match.group(2) in kinds:
                yield f"{page.relative_to(ROOT)}:{line}", match.group(2), code


def params(*kinds: str) -> pytest.MarkDecorator:
    """Parametrize over the blocks of ``kinds`` (at least one, or the test would only skip)."""
    found = list(blocks(*kinds))
    assert found, f"no {kinds} block left: drop the test"
    return pytest.mark.parametrize(
        ("where", "lang", "code"), found, ids=[where for where, _, _ in found]
    )


def test_every_block_says_its_language() -> None:
    untagged = [where for where, lang, _ in blocks() if lang not in KINDS]
    assert not untagged, f"tag these blocks with one of {sorted(KINDS)}: {untagged}"
    assert {lang for _, lang, _ in blocks()} >= {"python", "sh", "toml", "promql"}


# ------------------------------------------------------------------ python


def bound_names(tree: ast.AST) -> set[str]:
    """Names the snippet binds itself: parameters, locals, walrus and except targets, defs."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler):
            bound.add(node.name or "")
    return bound


@params("python")
def test_python_blocks_run(where: str, lang: str, code: str) -> None:
    tree = ast.parse(code, where)
    if excerpt := re.fullmatch(r"# ([\w/]+)\.py", code.splitlines()[0]):
        dotted = excerpt.group(1).replace("/", ".").removesuffix(".__init__")
        namespace = dict(vars(importlib.import_module(dotted)))
        imports: list[ast.stmt] = [
            n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
        ]
        exec(compile(ast.Module(imports, []), where, "exec"), namespace)
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        missing = read - bound_names(tree) - namespace.keys() - set(dir(builtins))
        assert not missing, f"{where} uses names {dotted} does not have: {missing}"
    else:
        namespace = {"__name__": "snippet"}
        exec(compile(tree, where, "exec"), namespace)
    assert unresolved_attributes(tree, namespace) == [], where


def unresolved_attributes(tree: ast.AST, namespace: dict[str, Any]) -> list[str]:
    """``module.name`` reads (also inside functions the block does not call) that the module
    does not have."""
    return [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if isinstance(module := namespace.get(node.value.id), ModuleType)
        if not hasattr(module, node.attr)
    ]


def test_an_excerpt_naming_what_its_module_lacks_is_caught() -> None:
    from services.responder import handlers

    tree = ast.parse("router.include(help.no_such_router(router))")
    assert unresolved_attributes(tree, dict(vars(handlers))) == ["help.no_such_router"]


async def test_the_readmes_behaviour_answers(redis: Redis) -> None:
    (code,) = [c for w, _, c in blocks("python") if w.startswith("README.md")]
    namespace: dict[str, Any] = {"__name__": "helpdesk"}
    exec(code, namespace)
    router: Router = namespace["router"]
    out = await run_events(redis, router, [text_message("报修 printer"), text_message("hi")])
    assert texts(out) == ["工单已创建"]


# ------------------------------------------------------------------ sh


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a block: continuations joined, comments and env assignments
    dropped, split at ``;``, ``&&``, ``||`` and ``|`` (a ``|`` inside a word is left alone:
    the docs write alternatives like ``ingress|responder|sender`` that way)."""
    for line in code.replace("\\\n", " ").splitlines():
        command: list[str] = []
        for token in shlex.split(line, comments=True):
            ends = token.endswith(";") and token != ";"
            token = token.removesuffix(";") if ends else token
            if token in {";", "&&", "||", "|"}:
                ends, token = True, ""
            assignment = re.fullmatch(r"[A-Z_]+=.*", token)
            if token and (command or not (assignment or token in SHELL_WORDS)):
                command.append(token)
            if ends and command:
                if command[0] != "for":  # a loop header: its body is the next command
                    yield command
                command = []
        if command:
            yield command


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", makefile, re.M))


@functools.cache
def routes() -> tuple[BaseRoute, ...]:
    """The routes the ingress, the sender (send API, gateway, health) and the console serve: read
    from the apps they build, so a route added or renamed is seen (Redis is never reached)."""
    settings = helpers.settings("redis://127.0.0.1:6379/0")
    redis = Redis.from_url(settings.require_redis())
    apps = [
        create_ingress(settings, redis).rest,  # POST /callback aside, its routes are Starlette's
        create_api(settings, redis, clients={}),
        create_console(settings, redis, Access(None)),
    ]
    found = tuple(route for app in apps for route in app.routes)
    assert served(found, "/callback") and served(found, "/v1/messages")
    return found


def served(table: Sequence[BaseRoute], path: str) -> bool:
    """Whether a route of ``table`` takes ``path`` (with any method)."""
    return any(isinstance(route, Route | Mount) and route.path_regex.match(path) for route in table)


def compose_services() -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return set(compose["services"])


def bench_help(*sub: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench", *sub, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def check_wecom_bus(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        pytest.fail(f"wecom-bus {shlex.join(argv)}: the CLI refuses it ({exit.code})")


def check_bench(argv: list[str]) -> None:
    sub = argv[:1] if argv and not argv[0].startswith("-") else []  # e.g. `profile`
    shown = bench_help(*sub)
    for arg, value in zip(argv, [*argv[1:], ""], strict=True):
        if arg.startswith("-"):
            assert re.search(rf"(^|\s){re.escape(arg)}\b", shown), f"bench has no {arg}"
            if "|" in value:  # alternatives: each one is an allowed choice
                assert all(choice in shown for choice in value.split("|")), value


def check(argv: list[str], created: dict[str, str]) -> None:
    """Check one command (see the module docstring); ``created`` maps copies to their source."""
    program = Path(argv[0]).name
    args = argv[1:]
    operands = [a for a in args if not a.startswith("-")]

    def exists(path: str) -> None:
        assert (ROOT / created.get(path, path)).exists(), f"{shlex.join(argv)}: no {path}"

    if program == "wecom-bus":
        check_wecom_bus(args)
    elif program == "make":
        assert set(args) <= make_targets(), f"{shlex.join(argv)}: not a Makefile target"
    elif program == "python" and args[:2] == ["-m", "bench"]:
        check_bench(args[2:])
    elif program == "python" and args[:1] == ["-m"]:
        # Another of the project's runnable modules: it must exist and take those options.
        module = args[1]
        assert importlib.util.find_spec(module) is not None, f"{shlex.join(argv)}: no {module}"
        shown = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        for arg in args[2:]:
            if arg.startswith("--"):
                assert arg in shown, f"{shlex.join(argv)}: {module} has no {arg}"
    elif program in {"pytest", "cp"}:
        exists(operands[0])
        if program == "cp":
            created[operands[1]] = operands[0]
    elif program == "curl":
        (url,) = [a for a in operands if "://" in a]
        path = urlparse(url).path
        assert served(routes(), path), f"no route for {url}"
    elif program == "docker" and args[:1] == ["compose"]:
        if args[1] == "run":
            service, *rest = [a for a in args[2:] if not a.startswith("--")]
            assert service in compose_services(), service
            check_wecom_bus(rest)  # the image's entrypoint is wecom-bus
    elif program == "docker":
        if args[0] == "build":
            exists(operands[-1] + "/Dockerfile")
    elif program == "export":  # the shell setting variables for the commands after it
        assert all("=" in a for a in args), f"{shlex.join(argv)}: export without a value"
    elif program in EXTERNAL:
        if program == "kubectl" and "-k" in args:
            exists(args[args.index("-k") + 1])
        if "--" in args:
            check(args[args.index("--") + 1 :], created)
    else:
        pytest.fail(f"{shlex.join(argv)}: {program} is neither the project's nor in EXTERNAL")


@params("sh")
def test_shell_blocks_name_commands_that_exist(where: str, lang: str, code: str) -> None:
    created: dict[str, str] = {}
    shown = list(commands(code))
    assert shown, where
    for argv in shown:
        check(argv, created)


def test_curl_paths_are_checked_against_the_routes_the_services_serve() -> None:
    table = routes()
    for path in ("/callback/hr", "/bot/helper", "/healthz", "/v1/wecom/user/get", "/static/x"):
        assert served(table, path), path
    for path in ("/v1/nothing", "/callbacks", "/v1/messages/a/b"):
        assert not served(table, path), path


def test_the_shell_check_refuses_what_does_not_exist() -> None:
    for wrong in (
        "wecom-bus heartbeat --check",
        "wecom-bus responder --no-such-flag",
        "make deploy",
        ".venv/bin/python -m bench --fast",
        "curl http://sender:8082/v1/nothing",
        "docker compose run --rm sender frobnicate",
        "cp no-such-file x",
        "frobnicate --all",
    ):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            for argv in commands(wrong):
                check(argv, {})


# ------------------------------------------------------------------ data, queries, images


@params("toml", "yaml")
def test_data_blocks_parse(where: str, lang: str, code: str) -> None:
    parsed = tomllib.loads(code) if lang == "toml" else yaml.safe_load(code)
    assert parsed, where


@params("promql")
def test_promql_blocks_pass_promtool(where: str, lang: str, code: str, tmp_path: Path) -> None:
    queries = [q for q in code.splitlines() if q.strip()]
    rules = [{"record": f"doc:query{n}", "expr": q} for n, q in enumerate(queries)]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    run_promtool("check", "rules", "rules.yml", cwd=tmp_path)
    named = set(re.findall(r"\bwecom_\w+", code))
    assert named <= set(documented()), f"{where}: not in docs/metrics.md: {named}"


@params("dockerfile")
def test_dockerfile_blocks_are_dockerfiles(where: str, lang: str, code: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    lines = [x for x in code.splitlines() if x.strip() and not x.startswith("#")]
    assert {x.split()[0] for x in lines} <= DOCKER_INSTRUCTIONS, where
    assert lines[0] == f"FROM wecom-bus:{version}", where


# ------------------------------------------------------------------ statements about Redis


def test_the_prefix_the_docs_show_for_cluster_is_accepted() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `BUS_PREFIX`")]
    (shown,) = re.findall(r"`(\{\w+\})`", row)
    assert load_settings({"BUS_PREFIX": shown}).prefix == shown


@pytest.mark.parametrize(
    "url", ["redis+sentinel://127.0.0.1:9/primary", "redis+cluster://127.0.0.1:9"]
)
def test_what_operations_says_about_sentinel_and_cluster_urls_is_what_check_does(
    url: str, tmp_path: Path
) -> None:
    """The guide says every service and command connects through these URLs: ``check`` must
    try to reach them (and report them unreachable: the port is closed), not refuse the form."""
    guide = " ".join((ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split())
    refusal = "Redis URL must specify one of the following schemes"
    environ = {"PATH": "", "REDIS_URL": url, "WECOM_CORP_ID": "ww1", "WECOM_AGENT_ID": "1"}
    environ["BUS_PARTITIONS"] = "2"  # a layout a cluster accepts (see "Refused settings")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("wecom-bus")), "check"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    said = "Every service and `wecom-bus` command connects through the same factory"
    assert said in guide
    output = done.stdout + done.stderr
    assert refusal not in output, output[-2000:]
    assert "unreachable" in output, output[-2000:]


def test_the_refusal_the_guide_shows_is_the_one_raised_and_long_replies_pass() -> None:
    guide = (ROOT / "docs" / "consumers.md").read_text(encoding="utf-8")
    (shown,) = re.findall(r"`SchemaError` naming the field \(`([^`]+)`\)", guide)
    with pytest.raises(SchemaError) as refused:
        TextSend.to("alice", " ")
    assert str(refused.value) == shown
    said = "over WeCom's 2048 bytes are accepted and sent as ordered parts, up to 20 per request"
    assert said in " ".join(guide.split())
    assert len(split_request(TextSend.to("alice", "长" * 1400))) == 3  # 4200 bytes
