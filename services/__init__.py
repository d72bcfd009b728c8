"""The three twofa services: auth, enrolment and audit."""
