"""The Dockerfile builds a CPU and a CUDA image of the project that run `tagstream` as a
non-root user, with a seed corpus and helper scripts that agree with the code."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import re

import corpus.reuters
from tests.deploy.support import (
    DEPLOY,
    DOCKERIGNORE,
    ROOT,
    cli_command,
    dockerfile_stages,
    effective_instruction,
    effective_user,
    image_env,
    json_form,
    project_packages,
    pyproject,
    stage_args,
)

TARGETS = ("cpu", "cuda")


def test_there_is_a_cpu_and_a_cuda_target_and_cpu_is_the_default() -> None:
    stages = dockerfile_stages()
    assert set(TARGETS) <= set(stages)
    assert list(stages)[-1] == "cpu", "a build without --target should give the CPU image"


def test_both_images_run_as_a_numeric_non_root_user() -> None:
    """Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd."""
    for target in TARGETS:
        user = effective_user(target)
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user}"
        assert not gid or (gid.isdigit() and int(gid) != 0), f"{target}: USER {user}"


def test_the_entrypoint_is_the_projects_tagstream_script_under_an_init() -> None:
    """`docker run IMAGE worker run`: the arguments go to `tagstream`, which tini runs as
    PID 1's child so that SIGTERM reaches it (PID 1 ignores signals it has no handler for)."""
    scripts = pyproject()["project"]["scripts"]
    for target in TARGETS:
        entrypoint = effective_instruction(target, "ENTRYPOINT")
        assert entrypoint is not None
        *init, program = json_form(entrypoint)
        assert init == ["/usr/bin/tini", "--"], f"{target}: ENTRYPOINT {entrypoint}"
        assert program in scripts, f"{target}: {program} is not in [project.scripts]"
    assert json_form(effective_instruction("cpu", "CMD") or "[]") == ["--help"]


def test_the_images_install_the_project_from_the_build_context() -> None:
    for target in TARGETS:
        copies = dockerfile_stages()[target].all("COPY")
        assert f"--from=build-{target} /opt/tagstream/venv /opt/tagstream/venv" in copies
        build = dockerfile_stages()[f"build-{target}"]
        assert any(args.startswith(". ") for args in build.all("COPY"))
        assert any("pip install --no-deps ." in args for args in build.all("RUN"))


def test_the_cpu_target_installs_torch_from_pypi_unless_an_index_is_given() -> None:
    assert stage_args("build-cpu") == {"TORCH_INDEX_URL": ""}
    assert stage_args("build-cuda") == {"TORCH_CUDA_INDEX_URL": ""}
    script = (DEPLOY / "docker" / "install-deps.sh").read_text()
    assert 'if [ -n "${1:-}" ]' in script and '--index-url "$1"' in script


def test_the_images_listen_for_probes_and_pick_their_device() -> None:
    for target in TARGETS:
        env = image_env(target)
        assert env["TAGSTREAM_WORKER_METRICS_HOST"] == "0.0.0.0"
        assert env["TAGSTREAM_WORKER_DEVICE"] == target
        assert env["TAGSTREAM_CACHE"].startswith("/var/cache/tagstream")
    assert image_env("cuda")["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    exposed = " ".join(dockerfile_stages()["runtime"].all("EXPOSE")).split()
    assert image_env("cpu")["TAGSTREAM_WORKER_METRICS_PORT"] in exposed


def test_the_baked_corpus_is_the_one_the_code_fetches_where_it_looks_for_it() -> None:
    args = stage_args("corpus")
    assert args["CORPUS_PACKAGE"] == corpus.reuters.PACKAGE
    assert args["CORPUS_SHA256"] == corpus.reuters.TARBALL_SHA256
    assert args["CORPUS_DIR"] == corpus.reuters.PACKAGE.replace("@", "-")
    runtime = " ".join(dockerfile_stages()["runtime"].all("COPY"))
    cache = image_env("cpu")["TAGSTREAM_CACHE"]
    assert f"/corpus/data {cache}/data" in runtime
    run = " ".join(dockerfile_stages()["corpus"].all("RUN"))
    assert "package/data/full/.complete" in run and "sha256sum -c" in run


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, ``!`` re-includes."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        forms = {bare, bare.replace("**/", "")}
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, form) for p in prefixes for form in forms):
            verdict = not negated
    return verdict


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_build_context_keeps_what_the_image_copies_and_installs() -> None:
    patterns = dockerignore_patterns()
    needed = ["pyproject.toml", "README.md"] + [f"{p}/__init__.py" for p in project_packages()]
    for stage in dockerfile_stages().values():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            needed += [w for w in words[:-1] if w != "."]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not ignored(path, patterns), f"{path} is excluded by {DOCKERIGNORE.name}"
    for path in (".git/HEAD", ".venv/bin/python", "tests/conftest.py"):
        assert ignored(path, patterns), f"{path} should stay out of the build context"


def embedded_python(script: str) -> ast.Module:
    (body,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", script, flags=re.S)
    return ast.parse(body)


def test_the_first_model_script_uses_names_the_code_has_and_a_real_command() -> None:
    script = (DEPLOY / "docker" / "ensure-model.sh").read_text()
    for node in ast.walk(embedded_python(script)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    (argv,) = re.findall(r"^exec tagstream (.+)$", script, flags=re.M)
    assert cli_command(argv.split()) is None, cli_command(argv.split())
