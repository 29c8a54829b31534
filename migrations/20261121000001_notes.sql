-- notesd schema, part 1: notes, their revisions, the outbox, idempotency
-- keys and API keys.
--
-- Ready for a distributed Postgres (Citus, distributed by tenant_id): every
-- primary key and unique index of a tenant table starts with tenant_id, ids
-- are UUIDv7 made by the application (no sequences), and no foreign key
-- leaves a tenant. api_keys is looked up before the tenant is known; under
-- Citus it is a reference table.

create table notes (
    tenant_id        text        not null,
    id               uuid        not null,
    subject_type     text        not null,
    subject_id       text        not null,
    related_subjects jsonb       not null default '[]',
    owner_id         text        not null,
    created_by       text        not null,
    updated_by       text        not null,
    -- 1 private, 2 team
    visibility       smallint    not null check (visibility in (1, 2)),
    -- 1 owner only, 2 team
    edit_policy      smallint    not null check (edit_policy in (1, 2)),
    body_text        text        not null,
    -- sanitized html; null for a plain-text note
    body_html        text,
    title            text        not null default '',
    mentions         text[]      not null default '{}',
    actions          jsonb       not null default '[]',
    attachments      jsonb       not null default '[]',
    pinned           boolean     not null default false,
    pinned_at        timestamptz,
    occurred_at      timestamptz not null,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    edited_at        timestamptz,
    deleted_at       timestamptz,
    draft            boolean     not null default false,
    source_system    text,
    source_id        text,
    client_reference text        not null default '',
    revision         bigint      not null,
    primary key (tenant_id, id),
    check ((source_system is null) = (source_id is null))
);

-- ListNotes reads newest occurred_at first, ties broken by id; each filter
-- has an index in that order so a page is a range scan (keyset pagination).
create index notes_tenant_occurred on notes (tenant_id, occurred_at desc, id desc);
create index notes_tenant_subject_occurred
    on notes (tenant_id, subject_type, subject_id, occurred_at desc, id desc);
create index notes_tenant_owner_occurred on notes (tenant_id, owner_id, occurred_at desc, id desc);
create index notes_tenant_pinned_occurred
    on notes (tenant_id, occurred_at desc, id desc) where pinned;
-- A vendor facade finds a note by the id it has in that vendor's system.
create unique index notes_tenant_source
    on notes (tenant_id, source_system, source_id) where source_system is not null;

-- Every change writes one revision in the same transaction: the whole note
-- as it was right after the change (to_jsonb of the notes row).
create table note_revisions (
    tenant_id   text        not null,
    note_id     uuid        not null,
    revision    bigint      not null,
    -- 1 created, 2 updated, 3 deleted, 4 undeleted
    change_kind smallint    not null check (change_kind between 1 and 4),
    actor_id    text        not null,
    changed_at  timestamptz not null,
    snapshot    jsonb       not null,
    primary key (tenant_id, note_id, revision)
);

-- The transactional outbox: one event per change, written with the change,
-- read by the change stream.
create table note_events (
    tenant_id   text        not null,
    id          uuid        not null,
    note_id     uuid        not null,
    revision    bigint      not null,
    change_kind smallint    not null check (change_kind between 1 and 4),
    created_at  timestamptz not null,
    primary key (tenant_id, id)
);

-- AddNote request ids (AIP-155): the first request's fingerprint and the
-- note it created.
create table note_requests (
    tenant_id   text        not null,
    request_id  uuid        not null,
    fingerprint bytea       not null,
    note_id     uuid        not null,
    created_at  timestamptz not null,
    primary key (tenant_id, request_id)
);

-- API keys. Only a SHA-256 of the secret is stored: the secret is 256
-- random bits, so a fast hash is as strong as a slow one here.
create table api_keys (
    id           uuid        primary key,
    tenant_id    text        not null,
    -- the member a member key acts as; null for a service key, which names
    -- its acting member on each call
    member_id    text,
    secret_hash  bytea       not null,
    label        text        not null default '',
    created_at   timestamptz not null,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

create index api_keys_tenant on api_keys (tenant_id, created_at);
