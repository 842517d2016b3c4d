"""Failure drills against a local Ringmon cluster (``make drills`` runs ``python -m drills``)."""
