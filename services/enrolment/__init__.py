"""The enrolment service: turning two-factor authentication on and off."""
