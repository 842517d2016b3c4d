"""The notification pipeline: grouping, routing, inhibition, silences, dedup and delivery."""
