"""Shared machinery: atomic writes, seeding, provenance, device slots, timing."""
