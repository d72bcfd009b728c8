"""Enrolment's HTTP entry points: routes and their schemas."""
