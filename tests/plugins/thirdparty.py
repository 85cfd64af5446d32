"""One of each plug-in kind, registered by tests/test_registry.py through a temporary dist-info.

A service with its processor (the processor declares the cut key), a name
resolver, a top-level command, a subcommand of `stdq config`, and an emulator.
"""

from __future__ import annotations

import json

import click

from stdq.processors.base import DataProcessor
from stdq.records import Target
from stdq.resolvers import NameResolver
from stdq.services.base import QueryForm, SingleTargetDataService
from stdq.testing.fakeserver import Emulator, Request, Response


class PlugForm(QueryForm):
    fields = ()


class PlugService(SingleTargetDataService):
    name = "plug"
    title = "A third-party service registered through entry points"
    data_product_type = "plug_photometry"
    form = PlugForm
    default_url = "http://127.0.0.1:9/plug"
    settings_defaults = {"poll_interval": 1.0}
    settings_help = {"poll_interval": "seconds between polls"}
    secret_fields = ()

    def query_service(self, target, params, context):
        product = context.new_product(target, params)
        rows = [{"mjd": 60000.0, "flux": 50.0, "err": 5.0}]
        product.add_raw("answer.json", json.dumps(rows).encode())
        return [product]


class PlugProcessor(DataProcessor):
    data_product_type = "plug_photometry"
    settings_defaults = {"snr_threshold": 4.0}
    settings_help = {"snr_threshold": "flux/err >= this is a detection"}

    def process(self, product):
        import pandas as pd

        rows = json.loads(product.raw("answer.json").path.read_text())
        frame = pd.DataFrame(rows)
        return pd.DataFrame({
            "mjd": frame["mjd"], "flux_ujy": frame["flux"], "flux_err_ujy": frame["err"],
            "detected": frame["flux"] / frame["err"] >= float(self.setting("snr_threshold")),
            "survey": "plug", "band": "plug::g",
        })


class PlugResolver(NameResolver):
    """Knows one name, "Plug Star"; "Broken Star" makes it fail like a service that is down."""

    name = "plug"
    title = "A third-party resolver"
    settings_defaults = {"plug_url": "http://127.0.0.1:9/resolve"}
    settings_help = {"plug_url": "where the plug resolver would ask"}

    def resolve(self, name: str) -> Target | None:
        from stdq.errors import TemporaryFailure

        if name.strip() == "Broken Star":
            raise TemporaryFailure("plug: the resolver is down")
        if name.strip() == "Plug Star":
            return Target(ra=12.5, dec=-33.25, name=name.strip(), resolver=self.name, canonical="PLUG 1")
        return None


@click.command("plug-hello")
@click.option("--who", default="world")
def hello(who: str) -> None:
    """Say hello (a top-level plug-in command)."""
    click.echo(f"hello {who}")


@click.command("plug-sub")
def config_sub() -> None:
    """A subcommand a plug-in adds to `stdq config`."""
    click.echo("plug-sub ran")


class PlugEmulator(Emulator):
    name = "plug"
    prefix = "/plug"
    service_name = "plug"

    def handle(self, request: Request) -> Response:
        return Response.json({"plug": True, "path": request.path})
