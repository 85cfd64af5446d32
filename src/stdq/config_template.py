"""The commented settings file that ``stdq config init`` writes (also ``config.example.toml``).

Every key of DESIGN.md's Settings section is here with its default, commented
out, so that the defaults stay in the code: uncomment a line to change it.
A line ``# key = value`` or ``# [table]`` is a setting; other comment lines explain.
Secrets appear only as commented placeholders: the environment is preferred.
"""

TEMPLATE = """\
# stdq settings (TOML). Written by `stdq config init`; see `stdq config show`
# for the merged settings in use, and `stdq services show NAME` for the keys
# and defaults of each service.
#
# Every setting below is commented out and shows its default: uncomment a line
# to change it. An unknown key is an error (exit 3) naming this file and the key.
# This file may hold secrets: keep it private (mode 0600), or better, keep the
# secrets in the environment (variables named below).

# Data directory: the SQLite database (targets, resolver cache, products, jobs)
# and the product folders. Default: the platform's user data folder
# (Linux: ~/.local/share/stdq). The environment variable STDQ_DATA_DIR and the
# --data-dir option win over this.
# data_dir = "~/.local/share/stdq"

# [tasks]
# Who runs a query: "database" queues it for background workers (long queries
# such as ATLAS forced photometry), "immediate" runs it in the calling process.
# backend = "database"
# Spawn a worker (detached, burst mode) when a job is queued and none is alive.
# autostart_worker = true
# Seconds after which a job whose worker stopped renewing its lease is taken up
# again from its checkpoint.
# lease_seconds = 30
# Runs of one job that ended in a temporary failure before it is failed for good.
# max_attempts = 5

# [http]
# Seconds to connect, and between bytes, for each request (may be fractional: 2.5).
# timeout = 30
# Retries of ONE request on connection errors, timeouts, HTTP 5xx and 429.
# max_retries = 4
# Seconds for a whole request: its retries and the whole answer, however slowly
# it comes (on top of `timeout`, which counts between bytes). Finite, > 0.
# deadline = 300
# The most bytes read from one answer (512 MiB); a longer answer is an error.
# max_bytes = 536870912

# [resolver]
# Resolvers asked in turn for a target name: "local" (the targets table of
# `stdq targets add`), "sesame" (CDS Sesame), "mast" (the MAST name resolver).
# Answers of remote resolvers are cached in the data directory.
# order = ["local", "sesame", "mast"]
# CDS Sesame (plain-text answers); the resolver appends /-oI/A?NAME.
# sesame_url = "https://cds.unistra.fr/cgi-bin/nph-sesame"
# The MAST (SANTA) name resolver (JSON answers).
# mast_url = "https://mastresolver.stsci.edu/Santa-war/query"

# Services. The built-in ones (atlas, panstarrs, ztf, ztf-fps) are registered
# already; a table here overrides their settings. A table for a new service
# needs `class = "package.module:ServiceClass"`. Every table accepts `class`,
# `url`, `api_key` and the service's own keys (`stdq services show NAME`).

# [services.atlas]
# The service class (built-in default shown).
# class = "stdq.services.atlas:AtlasForcedPhotometryService"
# The ATLAS forced-photometry server.
# url = "https://fallingstar-data.com/forcedphot"
# First wait between polls of a remote task, seconds (float).
# poll_interval = 5
# The wait grows up to this many seconds while the task is queued.
# max_poll_interval = 120
# A row with snr >= this is a detection.
# snr_threshold = 3
# Secret: prefer the environment, STDQ_ATLAS_API_KEY or
# ATLAS_FORCED_PHOTOMETRY_API_KEY (`stdq config atlas-login` gets a token).
# api_key = "<your ATLAS token>"

# [services.panstarrs]
# The MAST catalogs API for Pan-STARRS.
# url = "https://catalogs.mast.stsci.edu/api/v0.1/panstarrs"
# Optional secret: prefer the environment, STDQ_PANSTARRS_API_KEY or MAST_API_TOKEN.
# api_key = "<your MAST token>"

# [services.ztf]
# The IRSA ZTF light-curve API.
# url = "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves"

# [services.ztf-fps]
# The ZTF forced-photometry service (its paths are appended by the service).
# url = "https://ztfweb.ipac.caltech.edu"
# Secrets: prefer the environment, STDQ_ZTF_FPS_EMAIL and STDQ_ZTF_FPS_USERPASS.
# email = "<the e-mail address registered with ZFPS>"
# userpass = "<your ZFPS password>"

# [data_product_types]
# Data product type -> its title. The built-in types are registered already.
# atlas_photometry = "ATLAS photometry"

# [data_processors]
# Data product type -> "package.module:ProcessorClass". The built-in processors
# are registered already; a line here overrides one or adds a new type.
# atlas_photometry = "stdq.processors.atlas:AtlasProcessor"
"""
