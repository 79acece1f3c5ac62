"""One router per resource: parse the request, call a service, shape the response."""
