"""For ``twofa dev``, the tests and the bench: embedded servers, dev keys, seeding."""
