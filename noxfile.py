"""Developer sessions for the EasyRemote monorepo.

`python3 -m nox -s demo` runs the whole system locally, `python3 -m nox -s tests`
runs every test, `python3 -m nox -s dist` builds what README's Install section
installs. Generated protocol code is produced by `codegen` alone, with the
generator pinned below; `tests` fails when the committed code drifts.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PROTOS = ROOT / "protos"
PROTO_SRC = ROOT / "packages" / "easyremote-proto" / "src"
GENERATED = PROTO_SRC / "easyremote" / "proto" / "v1"
# README's install commands say `--find-links dist`: this folder, git-ignored.
DIST = ROOT / "dist"

# The generator pin decides the runtime floors in easyremote-proto's pyproject:
# grpcio-tools 1.66.2 bundles protoc 27.2 (protobuf 5.27.2). mypy-protobuf 5.x
# crashes next to older protobuf runtimes, so it stays on 3.7.
CODEGEN_REQUIREMENTS = ["grpcio-tools==1.66.2", "mypy-protobuf==3.7.0"]

# Dependency order: proto first, meta last.
PACKAGES = [
    "packages/easyremote-proto",
    "packages/easyremote-server",
    "packages/easyremote-node",
    "packages/easyremote-client",
    "packages/easyremote",
]
TEST_REQUIREMENTS = ["pytest>=7", "pytest-timeout>=2.1"]
BUILD_REQUIREMENTS = ["build>=1.0"]

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _install_packages(session: nox.Session) -> None:
    args: list[str] = []
    for package in PACKAGES:
        args += ["-e", package]
    session.install(*args)


def _generate(session: nox.Session, out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    session.run(
        "python",
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
        external=False,
    )


def _generated_files(base: Path) -> dict[str, Path]:
    found = {}
    for path in base.rglob("*"):
        if path.is_file() and "_pb2" in path.name:
            found[str(path.relative_to(base))] = path
    return found


@nox.session
def codegen(session: nox.Session) -> None:
    """Regenerate the committed protocol code with the pinned generator."""
    session.install(*CODEGEN_REQUIREMENTS)
    for stale in _generated_files(GENERATED).values():
        stale.unlink()
    _generate(session, PROTO_SRC)


def _check_drift(session: nox.Session) -> None:
    session.install(*CODEGEN_REQUIREMENTS)
    with tempfile.TemporaryDirectory() as tmp:
        _generate(session, Path(tmp))
        fresh = _generated_files(Path(tmp) / "easyremote" / "proto" / "v1")
        committed = _generated_files(GENERATED)
        if fresh.keys() != committed.keys():
            session.error(
                f"generated files differ: fresh {sorted(fresh)} vs committed "
                f"{sorted(committed)}; run `python3 -m nox -s codegen`"
            )
        stale = [n for n in fresh if not filecmp.cmp(fresh[n], committed[n], shallow=False)]
        if stale:
            session.error(f"generated code is stale: {stale}; run `python3 -m nox -s codegen`")
    session.log("generated protocol code matches the .proto files")


@nox.session
def drift(session: nox.Session) -> None:
    """Fail when the committed generated code differs from a fresh generation."""
    _check_drift(session)


def _version_of(package_dir: Path) -> str:
    text = next(package_dir.glob("src/easyremote/**/version.py")).read_text()
    return text.split('"')[1]


def _check_pins(session: nox.Session) -> None:
    """Internal dependencies pin exactly the version each package declares."""
    # Folder names are the distribution names.
    versions = {Path(p).name: _version_of(ROOT / p) for p in PACKAGES}
    problems = []
    for package in PACKAGES:
        text = (ROOT / package / "pyproject.toml").read_text()
        for name, version in versions.items():
            for line in text.splitlines():
                stripped = line.strip().strip('",')
                if stripped.startswith(f"{name}==") and stripped != f"{name}=={version}":
                    problems.append(f"{package}: {stripped} but {name} is {version}")
    if problems:
        session.error("internal pins out of date: " + "; ".join(problems))
    session.log(f"internal pins match: {versions}")


@nox.session(venv_backend="none")
def pins(session: nox.Session) -> None:
    """Check that internal version pins match the packages' versions."""
    _check_pins(session)


@nox.session
def tests(session: nox.Session) -> None:
    """Every package's tests, the integration tests, codegen drift, install check."""
    _check_pins(session)
    _check_drift(session)
    _install_packages(session)
    session.install(*TEST_REQUIREMENTS)
    session.run(
        "pytest",
        *[f"{p}/tests" for p in PACKAGES],
        "tests-integration",
        *session.posargs,
    )
    if not session.posargs:
        _install_check(session)


@nox.session
def demo(session: nox.Session) -> None:
    """A gateway, two nodes and a client on loopback: the seed's usage flow."""
    _install_packages(session)
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy strict on every package."""
    _install_packages(session)
    session.install("mypy>=1.10", "grpc-stubs>=1.53", "types-protobuf>=5", "types-psutil")
    session.run("mypy", *[f"{p}/src" for p in PACKAGES])


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: EasyRemote vs a raw grpc.aio relay, load balancing, failover (W5).

    Results go to .bench/ (git-ignored); ``-- --record`` writes the committed
    benchmarks/results.json, balancing.json and failover.json instead.
    ``-- ARGS`` go to benchmarks/run.py (see its --help); ``--quick`` and
    ``--record`` also reach benchmarks/balancing.py and failover.py.
    ``-- --balancing-only`` skips run.py.
    """
    _install_packages(session)
    # The benchmarks own their processes: gRPC's C core shows errors only.
    session.env.setdefault("GRPC_VERBOSITY", "ERROR")
    args = list(session.posargs)
    if "--balancing-only" in args:
        args.remove("--balancing-only")
    else:
        session.run("python", "benchmarks/run.py", *args)
    quick = "--quick" in args
    record = ["--record"] if "--record" in args else []
    session.run("python", "benchmarks/balancing.py", *(["--quick"] if quick else []), *record)
    session.run("python", "benchmarks/failover.py", "--runs", "1" if quick else "3", *record)


def _build_dist(session: nox.Session, out: Path) -> None:
    """Wheel and sdist of every package into ``out``, emptied first.

    The one recipe for `dist` and the install check, so the check installs what
    users build. ``python -m build`` makes the sdist, then the wheel from it, so
    a file missing from an sdist fails here too.
    """
    session.install(*BUILD_REQUIREMENTS)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for package in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(out), str(ROOT / package), silent=True)
    built = sorted(p.name for p in out.iterdir())
    session.log(f"built into {out}: {', '.join(built)}")


@nox.session
def dist(session: nox.Session) -> None:
    """Wheels and sdists of the five distributions into dist/ (emptied first).

    Then, per role: `python3 -m pip install --find-links dist easyremote-server`
    (or -node, -client, or easyremote for all of it); see docs/install.md.
    """
    _check_pins(session)
    _build_dist(session, DIST)


def _install_check(session: nox.Session) -> None:
    """Builds as `dist` does, then runs README's install commands in fresh venvs."""
    with tempfile.TemporaryDirectory(prefix="easyremote-dist-") as tmp:
        # A folder of its own, so the check never replaces a user's dist/.
        built = Path(tmp) / "dist"
        _build_dist(session, built)
        session.run(
            "python",
            str(ROOT / "tests-integration" / "install_check.py"),
            str(built),
            external=False,
        )


@nox.session(name="install-check")
def install_check(session: nox.Session) -> None:
    """README's install commands, word for word, in fresh venvs with an empty HOME."""
    _install_check(session)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run with: python3 -m nox")
