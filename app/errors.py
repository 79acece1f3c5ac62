"""Errors the services raise; the HTTP layer maps each to one status code."""

from __future__ import annotations


class KBQAError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(KBQAError):
    status_code = 404


class Conflict(KBQAError):
    status_code = 409


class InvalidInput(KBQAError):
    status_code = 422


class UnsupportedMediaType(KBQAError):
    status_code = 415


class PayloadTooLarge(KBQAError):
    status_code = 413


class ServiceUnavailable(KBQAError):
    status_code = 503


class InsufficientStorage(KBQAError):
    status_code = 507
