"""Against the real services (opt-in: ``pytest -m live``; deselected by default and in CI).

One small real query per service and resolver -- Sesame, the MAST resolver, PS1 DR2
(a cone of the mean table and the detection table's columns), IRSA ZTF, ATLAS's task
list without a token, the Gaia TAP cone and DataLink epoch photometry (a zip of CSV
files: entries and columns), Fink LSST (cone search, sources, forced photometry) and
ALeRCE LSST (object search, detections, forced photometry: JSON keys and the JSON types
of the fields; the real brokers are asked for an object of their own sky, the
emulators for theirs); ATLAS's with a token and the ZFPS status listing only when their
credentials are in the environment (STDQ_ATLAS_API_KEY or
ATLAS_FORCED_PHOTOMETRY_API_KEY; STDQ_ZTF_FPS_EMAIL and STDQ_ZTF_FPS_USERPASS) -- and
the same request to the emulator: the two answers must have the same shape (status,
media type, columns, JSON keys, Sesame line tags; stdq.testing.shapes), so that an
emulator that drifted from its service is caught. The credentials go only to the
real service's own url and are never printed.
"""

from __future__ import annotations

import httpx
import pytest

from stdq.testing import shapes

pytestmark = pytest.mark.live

REQUESTS = shapes.requests()


@pytest.fixture(autouse=True)
def only_when_asked(request):
    """Skipped unless the marker expression asks for live tests (a run with another -m,
    e.g. `-m "not slow"`, replaces the default `-m 'not live'` and must not reach out)."""
    expression = str(request.config.getoption("markexpr") or "")
    if "live" not in expression.replace("not live", ""):
        pytest.skip("asks the real services: run it with pytest -m live")




@pytest.mark.parametrize("request_", REQUESTS, ids=[r.name for r in REQUESTS])
def test_the_real_service_answers_in_the_shape_the_emulator_serves(request_, emulators):
    secrets = request_.secret_values()
    if secrets is None:
        needed = " and ".join(" or ".join(names) for names in request_.secrets.values())
        pytest.skip(f"{request_.name}: set {needed} to ask the real service")
    try:
        real = request_.send(shapes.REAL_URLS[request_.emulator], secrets, real=True)
    except httpx.TransportError as exc:
        pytest.fail(f"{request_.name}: the real service could not be asked ({type(exc).__name__})")
    emulated = request_.send(shapes.emulator_url(emulators, request_), shapes.emulator_secrets(request_))
    real_shape = shapes.shape_of(real, request_.kind)
    found = shapes.compare(request_, real, emulated)
    assert found == [], (
        f"{request_.name}: the emulator drifted from the real service\n  real:     "
        f"{real_shape.describe()}\n  emulator: {shapes.shape_of(emulated, request_.kind).describe()}\n  "
        + "\n  ".join(found)
    )
