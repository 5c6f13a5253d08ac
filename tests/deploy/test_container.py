"""deploy/Dockerfile: what the image is made of, read from the file (no engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE_USER = "10001"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    found: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_the_image_is_built_in_two_stages_from_the_wheel() -> None:
    build, _final = stages()
    assert " AS build" in build[0]
    build_text = "\n".join(build)
    assert "pip wheel" in build_text
    assert "--no-index --find-links /wheels backchannel" in build_text
    assert "pip install -e" not in build_text and "--editable" not in build_text
    assert "[dev]" not in build_text and "pgserver" not in build_text


def test_the_final_stage_copies_the_environment_only_and_runs_as_a_numeric_non_root_user() -> None:
    _, final = stages()
    final_text = "\n".join(final)
    copies = [i for i in final if i.upper().startswith("COPY")]
    assert any("--from=build /opt/backchannel /opt/backchannel" in c for c in copies)
    assert not any(c.split()[1] in ("backchannel", ".") for c in copies)  # no sources
    for tool in ("gcc", "build-essential", "pip install", "pgserver"):
        assert tool not in final_text
    [user] = [i for i in final if i.upper().startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid == IMAGE_USER and int(uid) != 0
    assert "PYTHONDONTWRITEBYTECODE=1" in final_text  # nothing written on a read-only root
    assert final[-1].startswith('CMD ["backchannel", "serve"')
    assert "/healthz" in final_text  # the HEALTHCHECK needs no database


def test_the_image_keeps_the_hypercorn_config_it_runs_with() -> None:
    _, final = stages()
    assert "COPY deploy/hypercorn.toml /etc/backchannel/hypercorn.toml" in final
    assert "/etc/backchannel/hypercorn.toml" in final[-1]


def test_the_build_context_leaves_out_the_virtual_environment_and_git() -> None:
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".backchannel"} <= set(ignored)
