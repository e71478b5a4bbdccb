"""``cifar10 stores dvc-remote``: the DVC remote named by ``stores.dvc_remote``, as DVC's own config.

Written with DVC's CLI into ``.dvc/config.local`` (not committed): the URL comes from params.yaml,
which is, and the endpoint is machine-specific. Credentials stay where DVC's S3 plugin reads them,
the environment (``AWS_*``); nothing secret is written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import stores
from common.exit_codes import UsageError

REMOTE = "cifar10"


def _dvc(*args: str, cwd: Path) -> None:
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    run = subprocess.run([dvc, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise UsageError(
            f"dvc {' '.join(args[:2])} failed: {stores.redact(run.stderr.strip() or run.stdout)}"
        )


def configure(cfg: Any, repo: Path) -> dict[str, str]:
    """Make ``stores.dvc_remote`` the default remote of the DVC project at ``repo``; what was written."""
    url = stores.resolve(cfg, "dvc_remote").uri
    if not url:
        raise UsageError("stores.dvc_remote is not set (nor $CIFAR10_DVC_REMOTE): there is no remote to add")
    endpoint = stores.resolve(cfg, "s3_endpoint").uri
    _dvc("remote", "add", "--local", "--force", "--default", REMOTE, url, cwd=repo)
    if endpoint:
        _dvc("remote", "modify", "--local", REMOTE, "endpointurl", endpoint, cwd=repo)
    else:
        _dvc("remote", "modify", "--local", "--unset", REMOTE, "endpointurl", cwd=repo)
    return {"remote": REMOTE, "url": url, "endpointurl": endpoint or "(AWS)", "config": ".dvc/config.local"}
