"""The build context's .dockerignore, read once per test module."""

from __future__ import annotations

import re

import pytest
from docker_context import DOCKERIGNORE, read_dockerignore


@pytest.fixture(scope="module")
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    assert DOCKERIGNORE.is_file(), ".dockerignore missing at the repository root (the build context)"
    return read_dockerignore(DOCKERIGNORE)
