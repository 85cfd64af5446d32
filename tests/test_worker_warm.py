"""A worker keeps its imports warm (issue 10 item 4): when it claims a job, the modules
the job's processing needs are imported in a background thread, once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    from stdq.config import load_settings
    from stdq.jobs import worker

    settings = load_settings(sys.argv[1], data_dir=sys.argv[2])
    assert "pandas" not in sys.modules and "stdq.processors.atlas" not in sys.modules
    thread = worker.warm_imports(settings, "atlas")
    assert thread is not None and thread.daemon
    thread.join(60)
    assert "pandas" in sys.modules and "stdq.processors.atlas" in sys.modules
    assert "stdq.processing" in sys.modules
    assert worker.warm_imports(settings, "atlas") is None  # once per process
    worker.WARM_IMPORTS = False
    assert worker.warm_imports(settings, "panstarrs") is None  # switched off
    worker.WARM_IMPORTS = True
    assert worker.warm_imports(settings, "no-such-service") is None  # nothing left, no error
    print("ok")
    """
)


def test_warm_imports_load_the_processing_modules_once(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text("")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config), str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
