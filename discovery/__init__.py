"""Ringmon discovery package."""
