#!/usr/bin/env python3
"""A grpcio client of notes.v1, run by tests/api/interop.rs against a real notesd.

It adds a note (and retries the add with the same request id), updates it
with its etag, lists its subject, watches the subject while the note
changes, and decodes the google.rpc.Status of an invalid AddNote. It prints
one line per step (`ok add <id>`, `ok update revision=2`, `ok list`,
`ok watch`, `ok error INVALID_ARGUMENT <reason> <field>`) and exits 1 with
`FAIL <step>: <why>` on standard error at the first failure.

Environment:
  NOTESD_TARGET        host:port of the gRPC port (required)
  NOTESD_API_KEY       a member key (required), sent as `x-api-key`
  NOTESD_PYTHON_GEN    directory of the generated stubs (interop/setup's
                       WORKDIR/python-gen); else they must be on PYTHONPATH
  NOTESD_CA            PEM file of the CA to trust: TLS when set, plaintext when not
  NOTESD_TLS_NAME      the name the server's certificate is checked for (default localhost)
  NOTESD_CLIENT_CERT   with NOTESD_CLIENT_KEY: a client certificate chain (PEM), for mTLS
  NOTESD_CLIENT_KEY    its private key (PEM)
"""

import json
import os
import queue
import sys
import threading
import uuid

_gen = os.environ.get("NOTESD_PYTHON_GEN")
if _gen:
    sys.path.insert(0, _gen)

import grpc  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from notes.v1 import notes_pb2, notes_pb2_grpc  # noqa: E402

# Every call gets a deadline; the watch gets a longer one.
CALL_TIMEOUT_S = 10.0
WATCH_TIMEOUT_S = 30.0
# How long a change may take to arrive on the watch.
EVENT_WAIT_S = 5.0

MIB = 1024 * 1024

# Retries of UNAVAILABLE (a server restarting, DATABASE_UNAVAILABLE): safe for
# AddNote because each add carries a request_id (a retry returns the note the
# first attempt created), and for UpdateNote because it carries the etag (a
# retry of an update that went through is ABORTED, ETAG_MISMATCH, never
# applied twice). docs/clients.md explains it.
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [
                {"service": "notes.v1.NotesService"},
                {"service": "notes.v1.SubjectsService"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


class Failure(Exception):
    pass


# The step running, named in the failure message.
STATE = {"step": "setup"}


def begin(step):
    STATE["step"] = step


def check(condition, message):
    if not condition:
        raise Failure(message)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"environment variable {name} is not set")
    return value


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def channel_from_env():
    target = env("NOTESD_TARGET")
    options = [
        # A note's body is up to 10 MiB of HTML plus its derived text; notesd
        # sends messages up to 32 MiB (the default would refuse past 4 MiB).
        ("grpc.max_receive_message_length", 32 * MIB),
        ("grpc.max_send_message_length", 32 * MIB),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ]
    ca = os.environ.get("NOTESD_CA")
    if not ca:
        return grpc.insecure_channel(target, options=options)
    cert = os.environ.get("NOTESD_CLIENT_CERT")
    key = os.environ.get("NOTESD_CLIENT_KEY")
    if bool(cert) != bool(key):
        raise Failure("NOTESD_CLIENT_CERT and NOTESD_CLIENT_KEY go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_file(ca),
        private_key=read_file(key) if key else None,
        certificate_chain=read_file(cert) if cert else None,
    )
    # The target is usually an address (127.0.0.1:port); the certificate
    # names a host.
    options.append(
        ("grpc.ssl_target_name_override", os.environ.get("NOTESD_TLS_NAME") or "localhost")
    )
    return grpc.secure_channel(target, credentials, options=options)


def status_details(err):
    """The google.rpc.Status of a failed call, with its ErrorInfo and BadRequest."""
    status = rpc_status.from_call(err)
    check(status is not None, f"no grpc-status-details-bin in {err.code().name}: {err.details()}")
    info, bad_request = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
    return status, info, bad_request


def expect_error(call, code, step):
    try:
        call()
    except grpc.RpcError as err:
        check(err.code() == code, f"{step}: expected {code.name}, got {err.code().name}: {err.details()}")
        return err
    raise Failure(f"{step}: expected {code.name}, the call succeeded")


def main():
    key = env("NOTESD_API_KEY")
    metadata = (("x-api-key", key),)
    channel = channel_from_env()
    stub = notes_pb2_grpc.NotesServiceStub(channel)

    # A subject of its own, so that the list and the watch see only this run.
    subject = notes_pb2.Subject(type="customer", id=f"interop-py-{uuid.uuid4()}")

    begin("add")
    add = notes_pb2.AddNoteRequest(
        request_id=str(uuid.uuid4()),
        note=notes_pb2.Note(
            subject=subject,
            title="First call",
            body=notes_pb2.NoteBody(text="Prefers email. Grüße, 你好 ✓"),
        ),
    )
    note = stub.AddNote(add, metadata=metadata, timeout=CALL_TIMEOUT_S).note
    check(note.id != "", "the added note has no id")
    check(note.subject == subject, f"subject {note.subject} != {subject}")
    check(note.title == "First call", f"title {note.title!r}")
    check(note.body.text == add.note.body.text, f"body {note.body.text!r}")
    check(note.revision == 1, f"revision {note.revision} after create")
    check(note.etag != "", "no etag")
    check(note.owner_id != "" and note.owner_id == note.creator_id, f"owner {note.owner_id!r}")
    # The same request with the same request_id is answered with the same note.
    again = stub.AddNote(add, metadata=metadata, timeout=CALL_TIMEOUT_S).note
    check(again.id == note.id and again.revision == 1, f"retry created {again.id} (revision {again.revision})")
    print(f"ok add {note.id}", flush=True)

    begin("update")
    update = notes_pb2.UpdateNoteRequest(
        note=notes_pb2.Note(id=note.id, etag=note.etag, title="Renewal call"),
        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
    )
    updated = stub.UpdateNote(update, metadata=metadata, timeout=CALL_TIMEOUT_S).note
    check(updated.title == "Renewal call", f"title {updated.title!r}")
    check(updated.revision == 2, f"revision {updated.revision}")
    check(updated.etag != note.etag, "the etag did not change")
    check(updated.body.text == note.body.text, "the body changed")
    # The old etag no longer matches.
    err = expect_error(
        lambda: stub.UpdateNote(update, metadata=metadata, timeout=CALL_TIMEOUT_S),
        grpc.StatusCode.ABORTED,
        "update with a stale etag",
    )
    _, info, _ = status_details(err)
    check(info is not None and info.reason == "ETAG_MISMATCH", f"stale etag: ErrorInfo {info}")
    print(f"ok update revision={updated.revision}", flush=True)

    begin("list")
    listed = stub.ListNotes(
        notes_pb2.ListNotesRequest(subject=subject), metadata=metadata, timeout=CALL_TIMEOUT_S
    )
    found = [n for n in listed.notes if n.id == note.id]
    check(len(found) == 1, f"note {note.id} not in the list ({len(listed.notes)} notes)")
    check(found[0].revision == 2 and found[0].title == "Renewal call", f"listed {found[0]}")
    check(listed.watch_token != "", "no watch_token")
    print("ok list", flush=True)

    begin("watch")
    # Watch from the list's watch_token: every change after the list arrives,
    # however soon after the call it commits (a watch without a token starts
    # "now", which a change made right away might precede). Changes the list
    # already showed may arrive again: they are skipped by revision.
    watch = stub.WatchNotes(
        notes_pb2.WatchNotesRequest(subject=subject, resume_token=listed.watch_token),
        metadata=metadata,
        timeout=WATCH_TIMEOUT_S,
    )
    events = queue.Queue()

    def read_stream():
        try:
            for message in watch:
                events.put(message)
        except grpc.RpcError as e:
            events.put(e)

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    try:
        watched = stub.UpdateNote(
            notes_pb2.UpdateNoteRequest(
                note=notes_pb2.Note(id=note.id, etag=updated.etag, title="Watched call"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        ).note
        check(watched.revision == 3, f"revision {watched.revision}")
        while True:
            try:
                message = events.get(timeout=EVENT_WAIT_S)
            except queue.Empty:
                raise Failure(f"no event for revision 3 within {EVENT_WAIT_S} s") from None
            if isinstance(message, grpc.RpcError):
                raise Failure(f"the stream ended: {message.code().name}: {message.details()}")
            check(message.resume_token != "", f"an event without resume_token: {message}")
            if message.type == notes_pb2.WATCH_EVENT_TYPE_HEARTBEAT:
                continue
            check(message.note_id == note.id, f"an event of another note: {message.note_id}")
            if message.revision < watched.revision:
                continue
            check(message.type == notes_pb2.WATCH_EVENT_TYPE_UPDATED, f"type {message.type}")
            check(message.revision == 3, f"revision {message.revision}")
            check(message.note.title == "Watched call", f"title {message.note.title!r}")
            check(message.HasField("change_time"), "no change_time")
            break
    finally:
        watch.cancel()
    reader.join(timeout=5)
    check(not reader.is_alive(), "the watch did not end when cancelled")
    check(watch.code() == grpc.StatusCode.CANCELLED, f"watch ended with {watch.code()}")
    print("ok watch", flush=True)

    begin("error")
    # A title over 1024 characters: INVALID_ARGUMENT, FIELD_TOO_LARGE, with a
    # BadRequest naming note.title (docs/errors.md).
    invalid = notes_pb2.AddNoteRequest(
        request_id=str(uuid.uuid4()),
        note=notes_pb2.Note(subject=subject, title="x" * 1025, body=notes_pb2.NoteBody(text="too long a title")),
    )
    err = expect_error(
        lambda: stub.AddNote(invalid, metadata=metadata, timeout=CALL_TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid AddNote",
    )
    status, info, bad_request = status_details(err)
    check(status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], f"status code {status.code}")
    check(info is not None, "no ErrorInfo in the details")
    check(info.domain == "notesd.dev", f"ErrorInfo domain {info.domain!r}")
    check(bad_request is not None and len(bad_request.field_violations) > 0, "no BadRequest field violation")
    field = bad_request.field_violations[0].field
    check(info.reason == "FIELD_TOO_LARGE", f"reason {info.reason}")
    check(field == "note.title", f"field {field!r}")
    check(info.metadata.get("field") == field, f"ErrorInfo metadata field {info.metadata.get('field')!r}")
    print(f"ok error {err.code().name} {info.reason} {field}", flush=True)

    channel.close()


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL {STATE['step']}: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        print(f"FAIL {STATE['step']}: unexpected {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
