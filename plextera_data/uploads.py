"""Row documents through the File Service: :class:`Uploader`, used by the submission engine.

With ``px.submit(..., upload=["document"])`` each cell of those columns was checked in planning
(a :class:`~plextera_data.rows.Upload` with its content hash); before a row's start, its files
are uploaded (``POST /files``) and their ids put into the JSON body as ``{"fileId": id}``.

* One upload per distinct content: a file used by many rows is uploaded once per batch, and the
  journal remembers every upload, so a rerun uploads nothing already uploaded. Rows that need a
  file being uploaded wait for that one upload.
* Uploads go through the batch's :class:`~plextera_data.pacing.Pacer` like every request (a 429
  pauses the batch).
* An upload that failed in a way that may have stored the file is sent again all the same
  (as the client's ``RetryPolicy`` allows, with GET's rules): a second upload only leaves an
  unused staged file, never a second run. A row whose upload fails for good is
  ``SUBMISSION_FAILED`` (its run was never started), with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from plextera_data.client import AsyncClient, new_request_id
from plextera_data.errors import PlexteraError, RateLimitError
from plextera_data.journal import Journal
from plextera_data.pacing import Pacer
from plextera_data.rows import RowRequest, Upload

__all__ = ["UploadFailedError", "Uploader"]


class UploadFailedError(PlexteraError):
    """A row's file could not be uploaded (after the retries the policy allows)."""

    def __init__(self, upload: Upload, cause: BaseException) -> None:
        self.upload = upload
        self.cause = cause
        super().__init__(
            f"Uploading {upload.file.filename!r} (column {upload.column!r}) failed: "
            f"{type(cause).__name__}: {cause}"
        )


class Uploader:
    """Uploads the files of planned requests, once per content (see the module docstring)."""

    def __init__(self, aclient: AsyncClient, pacer: Pacer, journal: Journal | None) -> None:
        self.aclient = aclient
        self.pacer = pacer
        self.journal = journal
        self._ids: dict[str, str] = journal.uploads() if journal is not None else {}
        self._pending: dict[str, asyncio.Future[str]] = {}
        #: Uploads sent by this uploader (not counting the ones the journal already had).
        self.uploaded = 0

    async def file_ids(self, request: RowRequest) -> Mapping[str, str]:
        """``sha256 -> file id`` for every file of ``request``, uploading what is missing.
        Raises :class:`UploadFailedError` if a file cannot be uploaded."""
        ids: dict[str, str] = {}
        for upload in request.uploads:
            ids[upload.sha256] = await self._file_id(upload)
        return ids

    async def _file_id(self, upload: Upload) -> str:
        sha = upload.sha256
        known = self._ids.get(sha)
        if known is not None:
            return known
        pending = self._pending.get(sha)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[sha] = future
        try:
            file_id = await self._upload(upload)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: rows waiting on it get it, nobody else needs to
            raise
        finally:
            self._pending.pop(sha, None)
        self._ids[sha] = file_id
        future.set_result(file_id)
        return file_id

    async def _upload(self, upload: Upload) -> str:
        policy = self.aclient.retry
        request_id = new_request_id()
        retries = 0
        while True:
            await self.pacer.acquire()
            try:
                uploaded = await self.aclient.upload_file(
                    upload.file, request_id=request_id, retry=False
                )
                self.pacer.on_success()
                break
            except PlexteraError as exc:
                wait = policy.next_wait(exc, retries, creates=False)
                limited = isinstance(exc, RateLimitError)
                if limited:
                    self.pacer.on_rate_limited(wait if wait is not None else 0.0)
                if wait is None:
                    raise UploadFailedError(upload, exc) from exc
            finally:
                self.pacer.release()
            retries += 1
            if not limited and wait > 0:
                await asyncio.sleep(wait)  # a 429's pause is the pacer's, for everyone
        if not uploaded.id:
            raise UploadFailedError(upload, PlexteraError("the File Service's answer had no id"))
        self.uploaded += 1
        if self.journal is not None:
            self.journal.save_upload(upload.sha256, uploaded.id, uploaded.name, uploaded.size)
            self.journal.commit_soon()
        return uploaded.id
