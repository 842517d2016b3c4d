"""Ringmon cli package."""
