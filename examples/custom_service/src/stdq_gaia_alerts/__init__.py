"""stdq-gaia-alerts: Gaia Science Alerts light curves as an stdq service (an example plug-in).

Three subclasses, as in the TOM Toolkit: the service and its query form
(:mod:`stdq_gaia_alerts.service`) and the data processor
(:mod:`stdq_gaia_alerts.processor`), registered through the ``stdq.services``
and ``stdq.processors`` entry points in pyproject.toml. :mod:`stdq_gaia_alerts.emulator`
is an emulator of the service for tests.
"""

__version__ = "0.1.0"
