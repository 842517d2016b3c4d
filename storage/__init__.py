"""Ringmon storage package."""
