"""Survey services: one module per service, registered through the `stdq.services` entry points."""
