"""Processors: raw files of one data product type -> the normalized photometry table."""
