"""Leaf helpers any Ringmon package may import; nothing here imports the rest of Ringmon."""
