"""Multipart forms whose text fields must be UTF-8: invalid bytes are refused, not guessed.

Starlette decodes a form field that is not valid UTF-8 as Latin-1 instead, so a camera id sent
in another encoding would be stored as different text than its sender meant. Routes with text
form fields use ``StrictFormRoute``, whose requests parse multipart bodies with a parser that
refuses such a field (422, naming it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartParser

__all__ = ["StrictFormRoute"]


class _StrictMultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(
                    422, f"form field {part.field_name!r} is not valid UTF-8 text"
                ) from None
        super().on_part_end()


class _StrictFormRequest(Request):
    async def _get_form(
        self,
        *,
        max_files: int | float = 1000,
        max_fields: int | float = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        content_type = self.headers.get("content-type", "")
        if self._form is None and content_type.lower().startswith("multipart/form-data"):
            async with aclosing(self.stream()) as stream:
                parser = _StrictMultiPartParser(
                    self.headers,
                    stream,
                    max_files=max_files,
                    max_fields=max_fields,
                    max_part_size=max_part_size,
                )
                self._form = await parser.parse()
            return self._form
        return await super()._get_form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )


class StrictFormRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictFormRequest(request.scope, request.receive))

        return strict
