"""Ringmon scraper package."""
