"""Ringmon alerting package."""
