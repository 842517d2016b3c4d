"""Ringmon web package."""
