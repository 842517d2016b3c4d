"""Ringmon agent package."""
