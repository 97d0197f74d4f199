"""What a request sends: one encoder and one set of file checks for planning and the client."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from plextera_data import errors
from plextera_data.bodies import (
    EXECUTABLE_SUFFIXES,
    MAX_FILE_BYTES,
    FileRef,
    RequestBody,
    Unsendable,
    check_file,
    encode_json,
    field_part,
)
from plextera_data.client import Client
from plextera_data.rows import plan_requests


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


# --------------------------------------------------------------------------- JSON


def test_json_body_is_the_utf8_json_text_of_the_object() -> None:
    body = RequestBody.for_json({"name": "Zoë", "n": 1, "nested": {"x": [1, None]}})
    assert body.content == '{"name": "Zoë", "n": 1, "nested": {"x": [1, null]}}'.encode()
    assert body.json == {"name": "Zoë", "n": 1, "nested": {"x": [1, None]}}
    assert not body.is_multipart
    assert RequestBody.for_json(None).content == b"{}"


def test_values_json_does_not_know_are_converted_by_the_one_mapping() -> None:
    text = encode_json(
        {
            "i": np.int64(3),
            "f": np.float32(0.5),
            "d": dt.date(2024, 1, 15),
            "t": pd.Timestamp("2024-01-15 09:30", tz="UTC"),
            "dec": decimal.Decimal("2.50"),
            "arr": np.array([1, 2]),
        },
        "body",
    )
    assert json.loads(text) == {
        "i": 3,
        "f": 0.5,
        "d": "2024-01-15",
        "t": "2024-01-15T09:30:00+00:00",
        "dec": 2.5,
        "arr": [1, 2],
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object(), {(1, 2): 1}, b"raw"])
def test_values_without_a_json_form_are_refused_naming_where(bad: Any) -> None:
    with pytest.raises(errors.InvalidInputError, match="The json= body cannot be sent as JSON"):
        RequestBody.for_json({"x": bad})


# --------------------------------------------------------------------------- multipart


def test_field_parts_follow_the_documented_wire_format() -> None:
    parts = [
        field_part(name, value)
        for name, value in {
            "s": "text",
            "n": 42,
            "np": np.int64(7),
            "b": True,
            "f": 1.5,
            "when": dt.datetime(2024, 1, 15, 9, 30),
            "obj": {"a": 1},
            "seq": ("x", 1),
            "none": None,
        }.items()
    ]
    assert [(p.name, p.data, p.content_type) for p in parts] == [
        ("s", b"text", None),
        ("n", b"42", None),
        ("np", b"7", None),
        ("b", b"true", None),
        ("f", b"1.5", None),
        ("when", b"2024-01-15T09:30:00", None),
        ("obj", b'{"a": 1}', "application/json"),
        ("seq", b'["x", 1]', "application/json"),
        ("none", b"null", "application/json"),
    ]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"raw", "Field 'f' holds bytes"),
        (float("inf"), "Field 'f' cannot be sent as JSON"),
        (object(), "Field 'f': type object has no JSON form"),
        ({"k": float("nan")}, "Field 'f' cannot be sent as JSON"),
    ],
)
def test_field_errors_are_the_clients_errors(value: Any, match: str) -> None:
    with pytest.raises(errors.InvalidInputError, match=match):
        field_part("f", value)
    client = Client(api_key="k", base_url="http://127.0.0.1/api")
    with pytest.raises(errors.InvalidInputError, match=match):
        client.start_run("w", fields={"f": value})  # the same check, the same words


def test_with_values_copies_along_the_path_and_leaves_the_original_alone() -> None:
    template = {"doc": {"fileId": None, "pages": 3}, "other": {"deep": [1]}}
    body = RequestBody.for_json(template)
    filled = body.with_values([(("doc", "fileId"), "file_1"), (("new", "x"), 2)])
    assert json.loads(filled.content or b"") == {
        "doc": {"fileId": "file_1", "pages": 3},
        "other": {"deep": [1]},
        "new": {"x": 2},
    }
    assert body.json == template == {"doc": {"fileId": None, "pages": 3}, "other": {"deep": [1]}}
    assert filled.json is not None
    assert filled.json["other"] == body.json["other"]
    # A JSON body keeps only its bytes (no dict to share): the template is left alone.
    assert body.content == RequestBody.for_json(template).content

    multipart = RequestBody.for_multipart({"a": "x", "doc": {"fileId": None}}, {"f": b"%PDF"})
    done = multipart.with_values([(("doc", "fileId"), "file_2"), (("z",), 1)])
    assert [(p.name, p.data) for p in done.fields] == [
        ("a", b"x"),
        ("doc", b'{"fileId": "file_2"}'),
        ("z", b"1"),
    ]
    assert done.files == multipart.files
    assert multipart.field_values == {"a": "x", "doc": {"fileId": None}}


# --------------------------------------------------------------------------- files


def test_a_planned_path_is_hashed_and_only_opened_to_send(tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(b"%PDF-1.4 hello")
    ref = check_file(path, "document")
    assert (ref.filename, ref.size, ref.path, ref.content) == ("claim.pdf", 14, path, None)
    assert ref.sha256 == hashlib.sha256(b"%PDF-1.4 hello").hexdigest()
    assert ref.mime_type == "application/pdf"
    with ref.opened() as first:
        assert first.read() == b"%PDF-1.4 hello"  # type: ignore[union-attr]
    assert first.closed  # type: ignore[union-attr]
    path.write_bytes(b"%PDF-1.4 changed")
    with ref.opened() as second:  # each attempt opens the file again
        assert second.read() == b"%PDF-1.4 changed"  # type: ignore[union-attr]


def test_planning_reads_a_stream_once_the_client_does_not(tmp_path: Path) -> None:
    stream = io.BytesIO(b"%PDF stream")
    stream.seek(2)
    planned = check_file(stream, "doc")
    assert planned.content == b"%PDF stream"  # from the start, as sending does; now held
    assert planned.sha256 == hashlib.sha256(b"%PDF stream").hexdigest()
    stream.seek(2)
    direct = check_file(stream, "doc", digest=False)
    assert direct.content is stream
    assert direct.size == 11
    assert direct.sha256 is None
    assert stream.tell() == 2  # peeked, then put back
    stream.seek(0)
    stream.write(b"MZ")  # what is sent is the stream from its start: that is what is checked
    stream.seek(5)
    with pytest.raises(Unsendable, match="starts with b'MZ'"):
        check_file(stream, "doc", digest=False)


def test_names_and_types() -> None:
    assert check_file(b"x", "document").filename == "document"
    assert check_file(b"x", "document").mime_type == "application/octet-stream"
    named = check_file(("notes.txt", b"hi", "text/x-notes"), "d")
    assert (named.filename, named.mime_type) == ("notes.txt", "text/x-notes")
    assert check_file(("data.csv", b"a"), "d").mime_type == "text/csv"
    renamed = check_file(b"x", "d", name="scan.png", content_type="image/png")
    assert (renamed.filename, renamed.mime_type) == ("scan.png", "image/png")


@pytest.mark.parametrize(
    "head",
    [b"MZ\x90\x00", b"\x7fELF\x02", b"#!/usr/bin/env python\n", b"\xcf\xfa\xed\xfe\x07"],
    ids=["pe", "elf", "shebang", "mach-o"],
)
def test_executables_are_recognised_by_their_content(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "innocent.pdf"
    path.write_bytes(head + b"rest")
    for digest in (True, False):
        for value in (path, head + b"rest", io.BytesIO(head), ("x.pdf", head)):
            with pytest.raises(Unsendable, match=r"executable or script .*content starts with"):
                check_file(value, "doc", digest=digest)


@pytest.mark.parametrize("suffix", EXECUTABLE_SUFFIXES)
def test_executables_are_recognised_by_their_name(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tool{suffix.upper()}"
    path.write_bytes(b"harmless text")
    with pytest.raises(Unsendable, match=f"ends in '{suffix}'"):
        check_file(path, "doc")


def test_the_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    at_limit = sparse(tmp_path / "ok.bin", MAX_FILE_BYTES)
    over = sparse(tmp_path / "big.bin", MAX_FILE_BYTES + 1)
    assert check_file(at_limit, "d", digest=False).size == MAX_FILE_BYTES
    with pytest.raises(Unsendable, match=rf"{MAX_FILE_BYTES + 1} bytes, over .* \(50 MB\)"):
        check_file(over, "d")
    with pytest.raises(Unsendable, match="over the File Service's limit of 10 bytes"):
        check_file(b"x" * 11, "d", limit=10)


def test_missing_unreadable_and_wrong_kinds(tmp_path: Path) -> None:
    with pytest.raises(Unsendable, match="no such file"):
        check_file(tmp_path / "nope.pdf", "d")
    with pytest.raises(Unsendable, match="is not a file"):
        check_file(tmp_path, "d")
    with pytest.raises(Unsendable, match="text mode"):
        check_file(io.StringIO("t"), "d")
    with pytest.raises(Unsendable, match="a file cannot have type float"):
        check_file(1.5, "d")
    with pytest.raises(Unsendable, match="tuple must be"):
        check_file(("only-a-name",), "d")


def test_multipart_body_sends_each_attempt_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF one")
    given = FileRef("given.txt", 1, None, content=io.BytesIO(b"3"))
    body = RequestBody.for_multipart({"id": "x"}, {"doc": path, "more": [b"%PDF two", given]})
    sent = []
    for _ in range(2):
        with body.sent() as kwargs:
            request = httpx.Request("POST", "http://127.0.0.1/", files=kwargs["files"])
            boundary = request.headers["content-type"].split("boundary=")[1].encode()
            sent.append(request.read().replace(boundary, b"BOUNDARY"))
    assert sent[0] == sent[1]  # paths reopened, streams rewound: the same bytes again
    for chunk in (b"%PDF one", b"%PDF two", b'filename="given.txt"', b'name="id"', b"\r\n3\r\n"):
        assert chunk in sent[0]


def test_planning_and_the_client_give_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "claim.pdf"
    path.write_bytes(b"%PDF claim")
    frame = pd.DataFrame({"claimId": ["c1"], "meta.n": [np.int64(2)], "document": [str(path)]})
    (planned,) = plan_requests(frame, "w", files=["document"])
    direct = RequestBody.for_multipart({"claimId": "c1", "meta": {"n": 2}}, {"document": path})
    assert [(p.name, p.data, p.content_type) for p in planned.body.fields] == [
        (p.name, p.data, p.content_type) for p in direct.fields
    ]
    ((name, ref),) = planned.body.files
    ((_, direct_ref),) = direct.files
    assert (name, ref.filename, ref.mime_type, ref.path) == (
        "document",
        direct_ref.filename,
        direct_ref.mime_type,
        direct_ref.path,
    )
