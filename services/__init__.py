"""The twofa services (auth, enrolment, audit), each in the same shape, and the program's
composition root: ``cli.py`` (the ``twofa`` command) and ``devstack.py`` (``twofa dev``)."""
