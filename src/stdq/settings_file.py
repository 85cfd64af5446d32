"""Where the settings file is: ``--config PATH``, else ``$STDQ_CONFIG``, else
``platformdirs.user_config_dir("stdq")/config.toml``.

Standard library only, and no pathlib: ``stdq query SERVICE --help`` asks whether
the file exists before anything else of the settings is imported (with no file the
settings are the defaults, and a built-in service's options need no settings at all).
:func:`stdq.config.config_path` is the same path as a :class:`pathlib.Path`.
"""

from __future__ import annotations

import os

ENV_CONFIG = "STDQ_CONFIG"


def default_settings_file() -> str:
    """The settings file when neither --config nor $STDQ_CONFIG says."""
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("stdq"), "config.toml")


def settings_file(explicit: str | os.PathLike[str] | None = None) -> str:
    """The settings file's path: EXPLICIT (--config), else $STDQ_CONFIG, else the default;
    ``~`` expanded."""
    if explicit:
        return os.path.expanduser(os.fspath(explicit))
    env = os.environ.get(ENV_CONFIG)
    if env:
        return os.path.expanduser(env)
    return default_settings_file()
