"""A fake forced-photometry service for the `services` and `products` CLI tests: no HTTP.

Its raw answer is a fixed JSON list (mjd, flux, err) written by query_service,
so the tests know every number; one row has a null flux (left out). Settings
keys: snr_threshold and limit_nsigma (the cuts `products reprocess` applies).
"""

from __future__ import annotations

import json

from stdq.processors.base import DataProcessor
from stdq.services.base import TIME_FIELDS, Field, QueryForm, SingleTargetDataService

# (mjd, flux uJy, err uJy): snr 25, 3, 2.5, -2, (null), 3
POINTS = [
    (60000.1, 50.0, 2.0),
    (60001.2, 12.0, 4.0),
    (60002.3, 5.0, 2.0),
    (60003.4, -4.0, 2.0),
    (60004.5, None, 1.0),
    (60005.6, 30.0, 10.0),
]
RAW = json.dumps({"points": [{"mjd": m, "flux": f, "err": e} for m, f, e in POINTS]}, indent=1).encode()


class FakeForm(QueryForm):
    fields = (*TIME_FIELDS, Field("band", "choice", default="g", choices=("g", "r"), help="the band to fake"))


class FakeService(SingleTargetDataService):
    name = "fake"
    title = "Fake photometry for CLI tests"
    info_url = "https://example.invalid/fake"
    data_product_type = "fake_photometry"
    form = FakeForm
    default_url = "https://example.invalid/fake"
    settings_defaults = {"snr_threshold": 3.0, "limit_nsigma": 5.0}
    settings_help = {
        "snr_threshold": "snr >= this is a detection",
        "limit_nsigma": "sigma level of the upper limits",
    }
    secret_fields = ("api_key",)
    secret_env = {"api_key": ("FAKE_PHOT_TOKEN",)}

    def query_service(self, target, params, context):
        product = context.new_product(target, params)
        product.add_raw("answer.json", RAW, url=f"{self.url}/answer.json", content_type="application/json")
        return [product]


class FakeProcessor(DataProcessor):
    data_product_type = "fake_photometry"

    def cuts(self):
        return {"snr_threshold": float(self.setting("snr_threshold", 3.0)),
                "limit_nsigma": float(self.setting("limit_nsigma", 5.0))}

    def process(self, product):
        import pandas as pd

        from stdq import photometry

        points = json.loads(product.raw("answer.json").path.read_bytes())["points"]
        kept = [p for p in points if p["flux"] is not None]
        product.leave_out("null flux", len(points) - len(kept))
        band = product.params.get("band", "g")
        df = pd.DataFrame(
            {
                "mjd": [p["mjd"] for p in kept],
                "survey": "FAKE",
                "telescope": "FAKE",
                "instrument": "FAKE",
                "filter": band,
                "band": f"fake{band}",
                "flux_ujy": [float(p["flux"]) for p in kept],
                "flux_err_ujy": [float(p["err"]) for p in kept],
                "flux_kind": "difference",
                "source_row_id": [str(i) for i in range(len(kept))],
            }
        )
        cuts = self.cuts()
        return photometry.fill_detections(df, cuts["snr_threshold"], cuts["limit_nsigma"])
