"""Files the package ships besides code: the SQL migrations and the authenticator app.

In the repository they live at the top level (``migrations/``,
``authenticator_app/``); ``backchannel/resources/`` holds symbolic links to
them. An editable install reads them in place through the links, and a built
wheel carries copies as package data (``pyproject.toml``), so both are found
the same way, through :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["bundled_dir"]


def bundled_dir(name: str) -> Path:
    """The directory ``resources/<name>`` of the installed package, on the file system.

    Raises ``FileNotFoundError`` when it is missing (a wheel built without its
    package data) or not on the file system (a zipped install).
    """
    found = files("backchannel") / "resources" / name
    if not isinstance(found, Path) or not found.is_dir():
        raise FileNotFoundError(
            f"backchannel's bundled {name}/ is missing from {found}; reinstall the package"
        )
    return found
