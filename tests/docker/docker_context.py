"""What the Docker tests read: the Dockerfile's instructions and copies, .dockerignore with
Docker's semantics, the build context, what ``setup.py`` packages, and the docker/ scripts.

Shared by the tests in this folder (not a test module itself).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import posixpath
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DOCKER_README = REPO / "docker" / "README.md"
CONFIG = REPO / "config"
CHAINS_IN_IMAGE = "/opt/conda/envs/gadgetron/share/gadgetron/config"
NO_CHAIN_REASON = "config/ has no chain XML yet (config/*.xml is written by the gadget work in progress)"


def _load(name: str) -> ModuleType:
    """Import the script docker/NAME.py (docker/ is not a package) as module ``docker_NAME``."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO / "docker" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


verify_image = _load("verify_image")
healthcheck = _load("healthcheck")


def chain_files() -> list[Path]:
    return sorted(CONFIG.glob("*.xml"))


# --------------------------------------------------------------------------------------------
# A small Dockerfile reader: continuation lines, comments, ARG/ENV expansion, COPY/ADD sources.


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None


def read_instructions(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside continuations) and blank lines
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def expand(text: str, variables: dict[str, str]) -> str:
    """Dockerfile variable substitution: $VAR, ${VAR}, ${VAR:-default}."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        value = variables.get(name, "")
        return value if value or default is None else default

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", replace, text)


def _assignments(args: str) -> dict[str, str]:
    """Key=value pairs of an ARG or ENV instruction (also the legacy ``ENV key value`` form)."""
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        pairs[key] = value if sep else ""
    return pairs


def read_copies(path: Path) -> list[Copy]:
    """COPY and ADD instructions with variables expanded (ARG defaults and ENV values)."""
    variables: dict[str, str] = {}
    copies = []
    for instruction in read_instructions(path):
        if instruction.keyword in ("ARG", "ENV"):
            for key, value in _assignments(instruction.args).items():
                if instruction.keyword == "ENV" or key not in variables:
                    variables[key] = expand(value, variables)
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        args = instruction.args
        flags: dict[str, str] = {}
        words = args.split()
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
        if words and words[0].startswith("["):
            words = json.loads(" ".join(words))
        assert len(words) >= 2, (
            f"{path}:{instruction.line}: {instruction.keyword} needs a source and a destination"
        )
        words = [expand(word, variables) for word in words]
        copies.append(Copy(instruction.line, tuple(words[:-1]), words[-1], flags.get("from")))
    return copies


def context_copies() -> list[Copy]:
    """COPY/ADD from the build context (not from another stage or image)."""
    return [copy for copy in read_copies(DOCKERFILE) if copy.from_stage is None]


# --------------------------------------------------------------------------------------------
# .dockerignore with Docker's semantics (moby/patternmatcher, as BuildKit applies it): patterns
# are cleaned and made relative, `*` and `?` stop at '/', `**` spans folders, a pattern that
# matches a parent folder matches the file, and the last matching pattern wins.


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        include = pattern.startswith("!")
        if include:
            pattern = pattern[1:].strip()
        pattern = posixpath.normpath(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
        patterns.append((include, re.compile(_pattern_regex(pattern))))
    return patterns


def _pattern_regex(pattern: str) -> str:
    regex, i = "^", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            regex += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            regex += re.escape(pattern[i])
        elif char in "[]":
            regex += char
        else:
            regex += re.escape(char)
        i += 1
    return regex + "$"


def is_excluded(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for include, regex in patterns:
        if include != excluded:
            continue
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not include
    return excluded


def context_files(patterns: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Every file of the working tree that the build context would carry."""
    files = []
    for folder, subfolders, names in os.walk(REPO):
        relative_folder = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative_folder == "." else relative_folder + "/"
        # .git and virtual environments can be large; they must be excluded anyway (checked here).
        for heavy in [d for d in subfolders if d in (".git", ".venv", "venv", "node_modules")]:
            assert is_excluded(prefix + heavy, patterns), f"{prefix + heavy} is not excluded"
            subfolders.remove(heavy)
        files += [prefix + name for name in names if not is_excluded(prefix + name, patterns)]
    return files


# --------------------------------------------------------------------------------------------
# What setup.py packages: the files `pip install .` inside the image needs.


def setup_keywords() -> dict[str, object]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            keywords = {}
            for keyword in node.keywords:
                try:
                    keywords[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:
                    continue
            return keywords
    raise AssertionError("setup.py has no setup(...) call")


def package_files() -> list[str]:
    """Repo-relative paths of the modules and package data setup.py installs."""
    keywords = setup_keywords()
    package_dir: dict[str, str] = keywords.get("package_dir", {})  # type: ignore[assignment]
    package_data: dict[str, list[str]] = keywords.get("package_data", {})  # type: ignore[assignment]
    files = ["setup.py"]
    for package in keywords["packages"]:  # type: ignore[union-attr]
        top, _, rest = package.partition(".")
        folder = REPO / package_dir.get(top, top) / rest.replace(".", "/")
        assert folder.is_dir(), f"setup.py package {package} has no folder {folder}"
        found = sorted(folder.glob("*.py"))
        for pattern in package_data.get(package, []):
            found += sorted(path for path in folder.glob(pattern) if path.is_file())
        files += [path.relative_to(REPO).as_posix() for path in found]
    return files


def context_relative(source: str) -> str:
    """A COPY source as a path relative to the build context root."""
    return source[2:] if source.startswith("./") else source.lstrip("/")


def is_copied(relative: str) -> bool:
    """Whether some COPY from the build context takes the repo-relative file ``relative``."""
    for copy in context_copies():
        for source in map(context_relative, copy.sources):
            source = source.rstrip("/")
            if re.match(_pattern_regex(source), relative) or relative.startswith(source + "/"):
                return True
    return False
