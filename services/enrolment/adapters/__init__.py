"""Enrolment's own adapters: the label projection (SQL) and the QR code."""
