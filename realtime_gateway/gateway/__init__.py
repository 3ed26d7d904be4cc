"""Stage 1, HTTP: the browser's offer in, the answer out (request/response, routes, CORS, principal)."""
