"""Ringmon query package."""
