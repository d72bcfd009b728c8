"""The HTTP shell: the app factory, problem bodies, middleware, OpenAPI, bearer tokens."""
