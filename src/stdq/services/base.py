"""The service and query-form extension points (as in the TOM Toolkit).

A service is a subclass of :class:`SingleTargetDataService` with a
:class:`QueryForm` subclass declaring its fields; the CLI builds
``stdq query SERVICE --help`` and its options from those fields. Service modules
must stay light at import time (no httpx, astropy or pandas at module level):
the CLI imports them to build its options.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import BadInput

if TYPE_CHECKING:
    from stdq.config import ServiceConfig, Settings
    from stdq.http import Client
    from stdq.services.context import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

MJD_UNIX_EPOCH = 40587.0


def __getattr__(name: str) -> Any:
    """``QueryContext`` lives in :mod:`stdq.services.context`, imported on first use."""
    if name == "QueryContext":
        from stdq.services.context import QueryContext

        return QueryContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Field:
    """One query option: ``--NAME`` on the command line, NAME in the cleaned params.

    type: "float", "int", "str", "bool" (a flag), "choice" (one of CHOICES),
    "date" (ISO 8601, UTC) or "choices" (a comma-separated subset of CHOICES).

    Immutable, compared and hashed by its values, like the frozen dataclass it was
    (written out: building a dataclass costs start-up time in every service module).
    """

    __slots__ = ("name", "type", "default", "help", "choices", "metavar")
    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...]
    metavar: str | None

    def __init__(
        self,
        name: str,
        type: str = "str",  # noqa: A002 - the option's type, as in the settings docs
        default: Any = None,
        help: str = "",  # noqa: A002
        choices: tuple[str, ...] = (),
        metavar: str | None = None,
    ) -> None:
        for key, value in zip(self.__slots__, (name, type, default, help, choices, metavar), strict=True):
            object.__setattr__(self, key, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, key) for key in self.__slots__)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {key!r} of a Field")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"cannot delete field {key!r} of a Field")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy through __init__
        return (self.__class__, self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.__slots__)
        return f"Field({shown})"

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def date_to_mjd(text: str) -> float:
    """ISO 8601 date or date-time (UTC unless it says otherwise) -> MJD."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"{text!r} is not an ISO 8601 date (e.g. 2023-05-19 or 2023-05-19T06:30:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp() / 86400.0 + MJD_UNIX_EPOCH


def mjd_now() -> float:
    return time.time() / 86400.0 + MJD_UNIX_EPOCH


# Fields shared by the services that take them.
TIME_FIELDS = (
    Field("mjd_min", "float", help="earliest MJD (UTC)", metavar="MJD"),
    Field("mjd_max", "float", help="latest MJD (UTC)", metavar="MJD"),
    Field("date_min", "date", help="earliest date, ISO 8601 UTC (instead of --mjd-min)", metavar="DATE"),
    Field("date_max", "date", help="latest date, ISO 8601 UTC (instead of --mjd-max)", metavar="DATE"),
)


def radius_field(default: float, maximum: float) -> Field:
    return Field(
        "radius",
        "float",
        default=default,
        help=f"cone radius in arcsec (default {default:g}, at most {maximum:g})",
        metavar="ARCSEC",
    )


ALL_OBJECTS_FIELD = Field(
    "all_objects", "bool", default=False, help="keep every object in the cone, not only the nearest"
)


TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})


def parse_bool(value: Any) -> bool:
    """A bool, 0/1, or one of true/false, yes/no, 1/0, on/off (case ignored); ValueError else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(value)


def parse_int(value: Any) -> int:
    """An int, a whole float, or the text of an integer; ValueError else (no truncation)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(str(value).strip())


class QueryForm:
    """The fields of one service's query, and their validation.

    Subclasses list their fields in ``fields`` and may extend :meth:`clean`
    (call ``super().clean()`` first), raising :class:`BadInput` with a message
    that names the option.
    """

    fields: ClassVar[tuple[Field, ...]] = ()
    max_radius_arcsec: ClassVar[float | None] = None

    def __init__(self, data: dict[str, Any]):
        self.data = dict(data)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in cls.fields]

    def clean(self) -> dict[str, Any]:
        """Typed, validated, normalized parameters (dates become MJDs)."""
        out: dict[str, Any] = {}
        known = {f.name: f for f in self.fields}
        for key in self.data:
            if key not in known:
                raise BadInput(f"unknown option --{key.replace('_', '-')}")
        for f in self.fields:
            value = self.data.get(f.name)
            if value is None or value == () or value == "":
                value = f.default
            if value is not None:
                value = self._convert(f, value)
            out[f.name] = value
        self._clean_time(out)
        self._clean_radius(out)
        return {k: v for k, v in out.items() if v is not None}

    def _convert(self, f: Field, value: Any) -> Any:
        try:
            if f.type == "float":
                result = float(value)
                if not math.isfinite(result):
                    raise ValueError
                return result
            if f.type == "int":
                return parse_int(value)
            if f.type == "bool":
                return parse_bool(value)
            if f.type == "choice":
                if str(value) not in f.choices:
                    raise ValueError
                return str(value)
            if f.type == "choices":
                items = [v.strip() for v in str(value).split(",") if v.strip()]
                bad = [v for v in items if v not in f.choices]
                if bad or not items:
                    raise ValueError
                return ",".join(dict.fromkeys(items))
            return str(value)
        except (TypeError, ValueError):
            choices = f" (one of: {', '.join(f.choices)})" if f.choices else ""
            if f.type == "bool":
                choices = " (true/false, yes/no, 1/0, on/off)"
            raise BadInput(f"{f.option}: {value!r} is not a valid {f.type}{choices}") from None

    def _clean_time(self, out: dict[str, Any]) -> None:
        for bound in ("min", "max"):
            mjd_key, date_key = f"mjd_{bound}", f"date_{bound}"
            if date_key not in {f.name for f in self.fields}:
                continue
            if out.get(mjd_key) is not None and out.get(date_key) is not None:
                raise BadInput(f"give --mjd-{bound} or --date-{bound}, not both")
            if out.get(date_key) is not None:
                out[mjd_key] = round(date_to_mjd(out.pop(date_key)), 6)
            out.pop(date_key, None)
        lo, hi = out.get("mjd_min"), out.get("mjd_max")
        for key in ("mjd_min", "mjd_max"):
            value = out.get(key)
            if value is not None and not (0 < value < 100000):
                raise BadInput(f"--{key.replace('_', '-')} {value} is not a plausible MJD")
        if lo is not None and hi is not None and lo >= hi:
            raise BadInput(f"the time range is empty: mjd_min {lo} is not before mjd_max {hi}")

    def _clean_radius(self, out: dict[str, Any]) -> None:
        radius = out.get("radius")
        if radius is None:
            return
        if radius <= 0:
            raise BadInput(f"--radius must be positive, not {radius:g}")
        if self.max_radius_arcsec is not None and radius > self.max_radius_arcsec:
            raise BadInput(
                f"--radius {radius:g} arcsec is larger than this service allows "
                f"({self.max_radius_arcsec:g} arcsec)"
            )


class SingleTargetDataService:
    """Base class of every service: subclass it, its QueryForm and a DataProcessor.

    Class attributes: ``name`` (the service name used on the command line and in
    settings), ``title``, ``info_url``, ``data_product_type`` (the key of its
    processor), ``supports_async`` (long queries that a background worker should
    run), ``form``, ``default_url``, ``settings_defaults`` (the service's own
    transport keys with their defaults: poll intervals, rate limits, page size;
    the cut keys are declared by its processor), ``settings_help``,
    ``secret_fields`` and ``secret_env`` (conventional environment variables per
    secret field). The registry (:mod:`stdq.registry`) merges the defaults with
    the settings file, checks their types and describes the service
    (``stdq services show``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    info_url: ClassVar[str] = ""
    data_product_type: ClassVar[str] = ""
    supports_async: ClassVar[bool] = False
    form: ClassVar[type[QueryForm]] = QueryForm
    default_url: ClassVar[str] = ""
    settings_defaults: ClassVar[dict[str, Any]] = {}
    settings_help: ClassVar[dict[str, str]] = {}
    secret_fields: ClassVar[tuple[str, ...]] = ("api_key",)
    secret_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    optional_secrets: ClassVar[tuple[str, ...]] = ()  # secret fields a query can do without
    version: ClassVar[str] = "1"

    def __init__(self, config: ServiceConfig, settings: Settings):
        self.config = config
        self.settings = settings

    @property
    def url(self) -> str:
        return self.config.url.rstrip("/")

    def http_auth(self) -> Any:
        """An httpx.Auth bound to this service's host, or None (public service)."""
        return None

    def make_client(self, context: QueryContext) -> Client:
        """The HTTP client of one job (override to add a rate limiter)."""
        from stdq import http

        return http.make_client(
            self.name,
            self.settings.http,
            auth=self.http_auth(),
            secrets=self.config.secret_values(),
            sleep=context.sleep,
            on_retry=context.report_retry,
        )

    def require_secret(self, fieldname: str) -> str:
        """The secret FIELDNAME, or ConfigError (exit 3) saying where to set it."""
        from stdq.config import env_var_name
        from stdq.errors import ConfigError

        value = self.config.secret(fieldname)
        if not value:
            names = [env_var_name(self.name, fieldname), *self.secret_env.get(fieldname, ())]
            raise ConfigError(
                f"{self.name}: no {fieldname} configured",
                hint=f"set {' or '.join(names)}, or {fieldname} in [services.{self.name}] "
                f"of {self.settings.path}",
            )
        return value

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        """Run the query and return the products holding the raw answers.

        Raise NoData when the service answered but has nothing for this target,
        TemporaryFailure for what may work later, QueryFailed otherwise.
        """
        raise NotImplementedError

    def cancel_remote(self, checkpoint: dict[str, Any], context: QueryContext) -> None:
        """Best-effort cleanup of a remote task when a job is cancelled (default: nothing)."""
        return None

    @classmethod
    def update_unchanged(cls, target: Target, products: list[Any], mjd_min: float | None) -> str | None:
        """For ``stdq update``: why asking this service again from MJD_MIN (None: the whole
        history) cannot bring a row that TARGET's stored ready PRODUCTS (records.Product,
        oldest first) lack -- e.g. a frozen data release already fetched -- or None (the
        default): ask. The update then answers 0 new rows with no job and no request."""
        return None

    def probe(self, client: Client) -> str:
        """One cheap request showing that the service answers in its own format
        (``stdq doctor``); returns what it saw, in a few words.

        Raise TemporaryFailure when it cannot be reached or answers an HTML page or an
        empty body, ConfigError when it refuses the credentials or the url is wrong,
        QueryFailed for another unexpected answer (:func:`probe_status`). The default:
        a GET of the service url, where any answer below HTTP 500 counts.
        """
        response = client.get(self.url)
        if response.status_code >= 500 or response.status_code == 429:
            probe_status(response, self.name, client.secrets)
        return f"HTTP {response.status_code} from {client.safe_url(response.request.url)}"


def probe_status(response: Any, service: str, secrets: Any = ()) -> None:
    """The verdict of ``stdq doctor`` on a probe's HTTP status: 429 and 5xx are
    TemporaryFailure (exit 75), 401/403 ConfigError (credentials refused), 404
    ConfigError (check the url), other 4xx QueryFailed; below 400 nothing."""
    from stdq.errors import ConfigError, TemporaryFailure
    from stdq.http import check_response, redact_url

    status = response.status_code
    url = redact_url(str(response.request.url), secrets)
    if status == 429 or status >= 500:
        raise TemporaryFailure(f"{service}: HTTP {status} from {url}; try again later")
    if status == 404:
        raise ConfigError(
            f"{service}: HTTP 404 from {url}",
            hint=f"check the {service} url setting: stdq services show {service}",
        )
    check_response(response, service, secrets)
