"""A minimal third-party-style service for CLI tests: rows from its own parameters, no HTTP."""

from __future__ import annotations

import json

from stdq.errors import NoData
from stdq.processors.base import DataProcessor
from stdq.services.base import TIME_FIELDS, Field, QueryForm, SingleTargetDataService


class DummyForm(QueryForm):
    fields = (
        *TIME_FIELDS,
        Field("rows", "int", default=3, help="how many rows"),
        Field("mode", "choice", default="ok", choices=("ok", "nodata", "garbage"), help="what to answer"),
    )


class DummyService(SingleTargetDataService):
    name = "dummy"
    title = "Dummy service for tests"
    data_product_type = "dummy_photometry"
    form = DummyForm
    default_url = "http://127.0.0.1:9/"
    settings_defaults = {"snr_threshold": 3.0}

    def query_service(self, target, params, context):
        if params["mode"] == "nodata":
            raise NoData("nothing here")
        product = context.new_product(target, params)
        if params["mode"] == "garbage":
            product.add_raw("answer.json", b"<html>not json</html>")
        else:
            rows = [{"mjd": 60000 + i, "flux": 10.0 * i, "err": 2.0} for i in range(params["rows"])]
            product.add_raw("answer.json", json.dumps(rows).encode())
        return [product]


class DummyProcessor(DataProcessor):
    def process(self, product):
        import pandas as pd

        from stdq import photometry

        rows = json.loads(product.raw("answer.json").path.read_bytes())
        df = pd.DataFrame(
            {
                "mjd": [r["mjd"] for r in rows],
                "flux_ujy": [r["flux"] for r in rows],
                "flux_err_ujy": [r["err"] for r in rows],
            }
        )
        df["band"] = "dummyband"
        df["survey"] = "DUMMY"
        df["flux_kind"] = "total"
        return photometry.fill_detections(df, self.setting("snr_threshold", 3.0), 3.0)
