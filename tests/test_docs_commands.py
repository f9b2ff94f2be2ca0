"""Every command the documentation shows is one that something runs, and that parses.

The shell commands in the fenced code blocks of the user docs (README, ``docs/``,
``docs/results/``, the deployment guide, the declared regimes) are extracted, with
``\\`` continuations joined, ``#`` comments dropped, ``&&`` / ``;`` / ``|`` chains split
and shell loops and variables (``$s``, ``$D``, ``<regime>``) given a plausible value.
Nothing is run; each command is checked against its own command line:

* ``python -m <project module>``: the module imports and its ``build_parser()``
  accepts the documented arguments (also for ``python -m`` commands in inline code);
* ``flwr`` and ``python -m mkdocs``: their click parsers accept them;
* ``deploy/*.sh`` and ``scripts/*.sh``: every flag is one of the script's ``case``
  labels.

And each command is accounted for (``test_every_command_is_run_somewhere``): a test or
benchmark in ``RUN_BY`` passes every flag it shows (values may differ); or the
paragraph just before or after its block says "run by hand" with a date; or it is in
``NOT_RUN``, with the reason nothing runs it. Shell plumbing (``cd``, ``kill``,
``ssh``, ...) is no entry point of the project and is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "results").glob("*.md")),
    ROOT / "deploy" / "README.md",
    ROOT / "conf" / "regimes" / "README.md",
]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PROJECT = {"benchmarks", "client_app", "common", "deploy", "experiments", "proto", "server_app"}
# Shell plumbing: no entry point of the project, nothing of ours to check.
PLUMBING = {".", "source", "cd", "export", "for", "done", "sleep", "kill", "echo", "tee"}
PLUMBING |= {"ssh", "scp", "git", "mkdir", "cp", "chown", "useradd", "journalctl"}
# Programs whose next word (when not a flag) is a subcommand.
SUBCOMMANDS = {"flwr", "flwr supernode", "python -m mkdocs", "python -m pip", "docker", "systemctl"}
SUBCOMMANDS |= {"ray"}
PLACEHOLDERS = {"regime": "hapt_scarce_skew", "RUN_ID": "1", "ID": "1", "run": "mlecs-s0"}
VARIABLES = {"HOME": "/home/user"}
BY_HAND = re.compile(r"run by hand\b[^|]*?\b\d{4}-\d{2}-\d{2}", re.IGNORECASE | re.DOTALL)

LOOPBACK = "tests/deploy/test_deployment.py (deploy/loopback.py; benchmarks/deploy_round.py)"
DAEMONS = "tests/deploy/test_daemons.py (the guide's --daemon mode)"
RAY_CLUSTER = "tests/deploy/test_ray_cluster.py (a head and a second Ray node on loopback)"
# entry point -> [(the flags a runner passes, the runner)]
RUN_BY: dict[str, list[tuple[str, str]]] = {
    "bash scripts/setup.sh": [("", ".ci/run (CI)")],
    "python -m pytest": [("-q -p", ".ci/run (CI); tests/test_docs.py checks the README's")],
    "python -m mkdocs build": [("--strict --site-dir", "tests/test_docs.py")],
    "flwr run": [
        ("--run-config --stream", LOOPBACK),
        ("--federation-config --stream --run-config", "benchmarks/quickstart.py"),
        ("--federation-config --run-config --format", "tests/deploy/test_simulation.py"),
    ],
    "flwr ls": [("--run-id --format", f"{LOOPBACK}; tests/deploy/test_simulation.py")],
    "flwr supernode list": [("--format", LOOPBACK)],
    "flwr log": [("--show", LOOPBACK)],
    "flwr stop": [("", LOOPBACK)],
    "deploy/gen_certs.sh": [("", LOOPBACK)],
    "deploy/write_connection.sh": [("", LOOPBACK)],
    "deploy/register_nodes.sh": [("--connection", LOOPBACK), ("--address --ca", DAEMONS)],
    "deploy/stop.sh": [("--wait", "tests/deploy/test_scripts.py (stand-in daemons)")],
    "deploy/start_superlink.sh": [
        ("--certs --host --port --database --pid-file", LOOPBACK),
        ("--certs --host --port --database --daemon --log-file --pid-file", DAEMONS),
    ],
    "deploy/start_fleet_proxy.sh": [
        ("--certs --host --port --upstream --pid-file", LOOPBACK),
        ("--certs --host --port --upstream --daemon --log-file --pid-file", DAEMONS),
    ],
    "deploy/start_supernode.sh": [
        ("--superlink --ca --key --port --partition-id --num-partitions --pid-file", LOOPBACK),
        (
            "--superlink --ca --key --port --partition-id --num-partitions --modalities "
            "--state-dir --daemon --log-file --pid-file",
            DAEMONS,
        ),
    ],
    "ray start": [
        (
            "--head --port --num-cpus --include-dashboard --temp-dir --object-store-memory "
            "--disable-usage-stats",
            RAY_CLUSTER,
        ),
        ("--address --num-cpus --object-store-memory --disable-usage-stats", RAY_CLUSTER),
    ],
    "ray status": [("--address", RAY_CLUSTER)],
    "flower-superlink": [
        (
            "--insecure --simulation --isolation --host --port --control-api-address --database",
            RAY_CLUSTER,
        )
    ],
    "python -m experiments.report": [("--out", "tests/experiments/test_html_report.py")],
    "python -m benchmarks.gpu_round": [
        ("--out --num-nodes --rounds --config --set", "tests/benchmarks/test_gpu_round.py")
    ],
    "python -m server_app.inference_server": [
        ("--run-dir --host --port --tls-cert --tls-key", "tests/proto/test_inference.py")
    ],
    "python -m client_app.inference_client": [
        ("--target --from-device --config --samples", "tests/proto/test_inference.py"),
        ("--target --from-device --config --root-cert --repeat", "tests/proto/test_inference.py"),
        ("--target --z-file --repeat", "tests/proto/test_inference.py"),
    ],
}
DOCKER = "no Docker engine on the build machine (the guide says so)"
NO_GPU = "the paper's regime at its declared caps needs a GPU, none was lent (docs say so)"
# "<doc>: <entry point> <its flags, sorted>", or "<doc>: <entry point>" for every use of
# the entry point in that doc -> why no test or benchmark runs it
NOT_RUN = {
    "deploy/README.md: systemctl daemon-reload": "no test installs the systemd units",
    "deploy/README.md: systemctl enable": "no test installs the systemd units",
    "deploy/README.md: docker compose": DOCKER,
    "deploy/README.md: docker run": DOCKER,
    "docs/real-models.md: python -m experiments.run --config --jobs --methods --num-nodes --out "
    "--seeds": NO_GPU,
    "docs/real-models.md: python -m experiments.compare --out --plot --primary": NO_GPU,
    "docs/ray-cluster.md: ray stop": "it ends every Ray process of the machine; the test stops "
    "its own by PID",
}


@dataclass
class Command:
    """One documented command: where it is, its words, the note beside its block."""

    where: str
    argv: list[str]
    by_hand: bool = False

    @property
    def entry(self) -> str:
        return split_entry(self.argv)[0]

    @property
    def flags(self) -> set[str]:
        rest = split_entry(self.argv)[1]
        return {t.split("=", 1)[0] for t in rest if re.match(r"-{1,2}[A-Za-z]", t)}

    @property
    def signature(self) -> str:
        return " ".join([f"{self.where.split(':')[0]}: {self.entry}", *sorted(self.flags)])


def split_entry(argv: list[str]) -> tuple[str, list[str]]:
    """The entry point (``python -m x``, ``flwr run``, ``deploy/x.sh``) and its arguments."""
    prog, rest = argv[0].removeprefix(".venv/bin/"), argv[1:]
    if prog in ("python", "python3") and rest[:1] == ["-m"] and len(rest) > 1:
        name, rest = f"python -m {rest[1]}", rest[2:]
    elif prog == "bash" and rest and rest[0].endswith(".sh"):
        name, rest = f"bash {rest[0]}", rest[1:]
    else:
        name = prog
    while name in SUBCOMMANDS and rest and not rest[0].startswith("-"):
        name, rest = f"{name} {rest[0]}", rest[1:]
    return name, rest


def expand(text: str, variables: dict[str, str]) -> str:
    """Give placeholders, arithmetic, command substitutions and variables a value."""
    text = re.sub(r"<([^<>\s][^<>]*)>", lambda m: PLACEHOLDERS.get(m[1], "x"), text)
    text = re.sub(r"\$\(\(.*?\)\)", "9094", text)
    text = re.sub(r"\$\([^)]*\)", "1", text)
    for _ in range(3):  # D=$HOME/... refers to another variable
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[1]), text)
    return text


def shell_commands(lines: list[str], where: str, first: int, by_hand: bool) -> list[Command]:
    """The commands of a shell block (``first``: the file's line number of ``lines[0]``)."""
    body = "\n".join(lines)
    variables = {**VARIABLES, **dict(re.findall(r"\bfor (\w+) in (\S+)", body))}
    variables.update(re.findall(r"(?:^|[;&\s])(?:export\s+)?([A-Z]\w*)=([^\s;'\"]+)", body))
    out: list[Command] = []
    logical, start = "", first
    for number, line in enumerate(lines, first):
        logical, start = (logical + " " + line, start) if logical else (line, number)
        if line.rstrip().endswith("\\"):
            logical = logical.rstrip()[:-1]
            continue
        lex = shlex.shlex(expand(logical, variables), posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        words: list[str] = []
        for token in [*lex, ";"]:
            if token and set(token) <= set(";&|"):
                argv = clean(words)
                if argv:
                    out.append(Command(f"{where}:{start}", argv, by_hand))
                words = []
            else:
                words.append(token)
        logical = ""
    return out


def clean(words: list[str]) -> list[str]:
    """Drop ``do``, ``sudo``, ``VAR=value`` prefixes, ``...`` and optional ``[ ]`` marks."""
    while words and (words[0] in ("do", "sudo") or re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0])):
        words = words[1:]
    words = [w.removeprefix("[").removesuffix("]") for w in words if w not in ("...", "[", "]")]
    return [w for w in words if w]


def fenced_blocks(path: Path):
    """Each shell block of ``path``: (first body line number, body, by-hand note beside it)."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence))
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        if lang in SHELL_LANGS:
            notes = (paragraph(lines, i - 1, -1), paragraph(lines, end + 1, 1))
            yield i + 2, body, any(BY_HAND.search(note) for note in notes), lang
        i = end + 1


def paragraph(lines: list[str], at: int, step: int) -> str:
    """The paragraph nearest line ``at``, looking up (``step`` -1) or down (+1)."""
    while 0 <= at < len(lines) and not lines[at].strip():
        at += step
    out = []
    while 0 <= at < len(lines) and lines[at].strip() and not lines[at].lstrip().startswith("```"):
        out.append(lines[at])
        at += step
    return " ".join(out[::step])  # in reading order, also when read upwards


def starts_a_command(line: str) -> bool:
    """Whether a line of a block without a language reads as a command."""
    word = line.split()[0] if line.split() else ""
    return bool(re.fullmatch(r"(\.venv/bin/)?(python3?|flwr|bash|docker|pip)|\S+/\S+\.sh", word))


@functools.cache
def doc_commands() -> tuple[Command, ...]:
    """Every command of every fenced shell block of the docs."""
    out: list[Command] = []
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        for first, body, by_hand, lang in fenced_blocks(path):
            if lang == "" and not any(starts_a_command(line) for line in body):
                continue  # a diagram or a file map
            out.extend(shell_commands(body, rel, first, by_hand))
    return tuple(c for c in out if c.argv[0] not in PLUMBING)


def inline_python_commands() -> list[Command]:
    """``python -m`` commands in inline code (outside fenced blocks)."""
    out = []
    for path in DOCS:
        text = re.sub(r"(?ms)^\s*```.*?^\s*```", "", path.read_text())
        for span in re.findall(r"`((?:\.venv/bin/)?python3? -m [^`]+)`", text):
            rel = path.relative_to(ROOT).as_posix()
            out += shell_commands([" ".join(span.split())], f"{rel} (inline)", 0, False)
    return out


def click_error(group: click.Command, name: str, args: list[str]) -> str | None:
    """Parse ``args`` with a click command (subcommands followed); the error, if any."""
    try:
        ctx = group.make_context(name, list(args))
        while isinstance(group, click.Group):
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
            sub = group.get_command(ctx, rest[0]) if rest else None
            if sub is None:
                return f"no subcommand in {args}"
            group, ctx = sub, sub.make_context(rest[0], rest[1:], parent=ctx)
    except click.ClickException as err:
        return err.format_message()
    return None


@functools.cache
def flwr_cli() -> click.Command:
    with warnings.catch_warnings():  # typer's own deprecation warnings about click
        warnings.simplefilter("ignore", DeprecationWarning)
        import typer
        from flwr.cli.app import app

        return typer.main.get_command(app)


def script_flags(path: Path) -> set[str]:
    """The flags a ``deploy/`` or ``scripts/`` shell script accepts (``case`` labels)."""
    labels = re.findall(r"^\s*((?:-[-\w]+)(?:\s*\|\s*-[-\w]+)*)\s*\)", path.read_text(), re.M)
    quoted = re.findall(r'"(--[\w-]+)"', path.read_text())  # write_connection.sh's [--default]
    return {f.strip() for label in labels for f in label.split("|")} | set(quoted)


def parse_error(cmd: Command) -> str | None:
    """Why ``cmd``'s own command line refuses it (None: it parses or is not ours to check)."""
    entry, rest = split_entry(cmd.argv)
    if entry.startswith("python -m "):
        module = entry.split()[2]
        top = module.split(".")[0]
        if top == "mkdocs":
            from mkdocs.__main__ import cli

            return click_error(cli, "mkdocs", [*entry.split()[3:], *rest])
        if importlib.util.find_spec(top) is None:
            return f"no module {module!r}"
        if top not in PROJECT:
            return None  # pytest, pip: third-party command lines
        try:
            build = importlib.import_module(module).build_parser
        except (ImportError, AttributeError) as err:
            return f"{module}: {err}"
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build().parse_args(rest)
        except SystemExit:
            return stderr.getvalue().strip().splitlines()[-1]
        return None
    if entry.startswith("flwr"):
        return click_error(flwr_cli(), "flwr", cmd.argv[1:])
    script = entry.removeprefix("bash ")
    if script.endswith(".sh"):
        path = ROOT / script
        if not path.is_file():
            return f"no script {script}"
        unknown = cmd.flags - script_flags(path)
        return f"{script} accepts no {sorted(unknown)}" if unknown else None
    return None


def runner(cmd: Command) -> str | None:
    """Who runs ``cmd``: a test or benchmark, "by hand", a reason, or None (nobody)."""
    for flags, who in RUN_BY.get(cmd.entry, []):
        if cmd.flags <= set(flags.split()):
            return who
    if cmd.by_hand:
        return "by hand (dated note beside the block)"
    doc = cmd.where.split(":")[0]
    reason = NOT_RUN.get(cmd.signature) or NOT_RUN.get(f"{doc}: {cmd.entry}")
    return reason and f"not run: {reason}"


def test_the_docs_have_commands():
    commands = doc_commands()
    entries = {c.entry for c in commands}
    assert len(commands) > 40
    assert {"flwr run", "python -m experiments.run", "deploy/start_supernode.sh"} <= entries


def test_every_documented_command_parses():
    problems = [
        f"{c.where}: {shlex.join(c.argv)}\n    {err}"
        for c in [*doc_commands(), *inline_python_commands()]
        if (err := parse_error(c))
    ]
    assert problems == [], "\n".join(problems)


def test_every_command_is_run_somewhere():
    missing = [f"{c.where}: {c.signature!r}" for c in doc_commands() if not runner(c)]
    assert missing == [], (
        "documented commands that no test or benchmark runs, without a dated "
        "'run by hand' note beside their block (or an entry in NOT_RUN):\n" + "\n".join(missing)
    )


@pytest.mark.parametrize(
    "line",
    [
        "python -m experiments.run --methods mlecs --no-such-flag 1",
        "python -m experiments.compare",  # its sources are required
        "python -m experiments.no_such_module --out x",
        "flwr run . --no-such-flag",
        "python -m mkdocs build --no-such-flag",
        "deploy/start_superlink.sh --certs c --no-such-flag",
    ],
)
def test_a_wrong_command_is_refused(line):
    (cmd,) = shell_commands([line], "x.md", 1, False)
    assert parse_error(cmd)


def test_an_unlisted_command_is_not_run_anywhere():
    (cmd,) = shell_commands(["flwr run . --federation-config x --no-such-flag"], "x.md", 1, False)
    assert runner(cmd) is None
    (cmd,) = shell_commands(["flwr login mlecs"], "x.md", 1, by_hand=True)
    assert runner(cmd) == "by hand (dated note beside the block)"


def test_shell_syntax_is_read_like_a_shell():
    lines = [
        "for s in 3 4; do for r in a b; do",
        "  python -m experiments.run --seeds $s \\",
        "      --config conf/regimes/$r.toml --out outputs/<regime>   # a comment",
        "done; done",
        ". .venv/bin/activate && X=1 flwr ls mlecs --run-id <RUN_ID> [--format json]",
    ]
    cmds = [c for c in shell_commands(lines, "x.md", 1, False) if c.argv[0] not in PLUMBING]
    assert [c.argv for c in cmds] == [
        ["python", "-m", "experiments.run", "--seeds", "3", "--config", "conf/regimes/a.toml"]
        + ["--out", "outputs/hapt_scarce_skew"],
        ["flwr", "ls", "mlecs", "--run-id", "1", "--format", "json"],
    ]
    assert cmds[0].where == "x.md:2" and cmds[1].entry == "flwr ls"
