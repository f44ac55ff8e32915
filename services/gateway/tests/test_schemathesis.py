"""schemathesis against the running gateway's own OpenAPI document, with the real services behind
it: generated requests for every operation (valid and invalid ones), and not one may get a 5xx.

Bounded (a few examples per operation, a fixed seed) so it fits in ``make test``; raise
``COLLABNET_SCHEMATHESIS_EXAMPLES`` for a deeper run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from gateway_testing import Stack

from collabnet.identity.v1 import identity_pb2 as identity

pytestmark = pytest.mark.asyncio(loop_scope="module")
EXAMPLES = int(os.environ.get("COLLABNET_SCHEMATHESIS_EXAMPLES", "3"))
SCOPES = ("network:admin", "keys:manage", "reviews:write", "reviews:moderate")


async def test_no_generated_request_gets_a_server_error(shared_stack: Stack, tmp_path: Path) -> None:
    partner = await shared_stack.partner(None, identity.PARTNER_KIND_RETAILER, scopes=SCOPES)
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable is not None
    base = str(shared_stack.http.base_url).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        executable,
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20261122",
        "--generation-database",
        "none",
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--no-color",
        "--header",
        f"Authorization: Bearer {partner.secret}",
        "--exclude-path-regex",
        "^/(healthz|readyz)$",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20_000:]
    print(text[-3_000:])
