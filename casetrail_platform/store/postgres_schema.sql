-- Schema of the PostgreSQL event store (casetrail_platform/store/postgres.py).
--
-- A template for psycopg.sql: {schema} is the store's schema (quoted identifier); {table_name}
-- the table's qualified name, {channel} the LISTEN/NOTIFY channel and {lock_class} the first
-- key of the append lock are literals.
-- PostgresEventStore.connect() runs it on every start, so every statement is idempotent.
-- Never put a brace in the text below except for these placeholders.

CREATE TABLE IF NOT EXISTS {schema}.stored_events (
    -- fixed-width columns first: no alignment padding between them
    position        bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    sequence        integer     NOT NULL CHECK (sequence > 0),
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    event_id        uuid        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    stream          text        NOT NULL,
    event_type      text        NOT NULL,
    source          text        NOT NULL,
    actor_id        text        NOT NULL,
    actor_role      text        NOT NULL,
    -- the CloudEvents subject (case id, or client id for a registration), kept so that
    -- routing and publishing never need to decode the data
    subject         text        NOT NULL,
    -- The event's JSON exactly as encoded (events.registry.encode). bytea, not jsonb: jsonb
    -- would parse and re-serialise every event on the way in and out for queries the store
    -- never makes (measured on 300k events of ~250 bytes: insert 2.8 s vs 1.9 s, read out
    -- 0.61 s vs 0.13 s), would not keep the bytes that the retry check compares, and could
    -- not hold data encrypted per client later.
    data            bytea       NOT NULL,
    CONSTRAINT stored_events_pkey PRIMARY KEY (position),
    CONSTRAINT stored_events_event_id_key UNIQUE (event_id),
    -- also the index read_stream and stream versions use
    CONSTRAINT stored_events_stream_sequence_key UNIQUE (stream, sequence)
);

-- recorded_at rises with position (see append below), so a BRIN index answers "recorded
-- between" queries at almost no cost per insert.
CREATE INDEX IF NOT EXISTS stored_events_recorded_at_brin
    ON {schema}.stored_events USING brin (recorded_at);

-- read_by_causation: a retried command looks up what it recorded the first time.
CREATE INDEX IF NOT EXISTS stored_events_causation_id
    ON {schema}.stored_events (causation_id) WHERE causation_id IS NOT NULL;

-- Decision states folded up to a version (casetrail_platform/folded.py): derived data, written
-- outside any append's transaction, safe to delete at any time (a stream is then folded from its
-- start). Only states that hold no sealed value are written here.
CREATE TABLE IF NOT EXISTS {schema}.snapshots (
    version         integer NOT NULL,
    schema_version  integer NOT NULL,
    last_event_id   uuid    NOT NULL,
    fold            text    NOT NULL,
    stream          text    NOT NULL,
    data            bytea   NOT NULL,
    PRIMARY KEY (fold, stream)
);

CREATE OR REPLACE FUNCTION {schema}.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored events are immutable: % on %.% is refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'CT003';
END
$$;

-- Statement-level, so even an UPDATE or DELETE that matches no row is refused, and TRUNCATE
-- (which row triggers never see) too. Created only when missing: CREATE OR REPLACE TRIGGER
-- would lock the table against appends on every start.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = {table_name}::regclass
          AND tgname = 'stored_events_are_immutable'
    ) THEN
        CREATE TRIGGER stored_events_are_immutable
            BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.stored_events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
    END IF;
END
$$;

-- The W3C trace context (traceparent) of the command that stored the event, NULL when it was
-- not traced. Not part of the event: the ledger's canonical bytes
-- (casetrail_platform/ledger/canonical.py) leave it out, so verified history never depends on
-- tracing. Added to a table made before it existed only when missing (ALTER TABLE locks the table
-- against appends even when a no-op).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = {table_name}::regclass AND attname = 'trace_parent' AND NOT attisdropped
    ) THEN
        ALTER TABLE {schema}.stored_events ADD COLUMN trace_parent text;
    END IF;
END
$$;

-- Until the store learnt ANY_VERSION the two functions below returned no first_sequence; a
-- function's result type cannot be changed in place, so the old ones are dropped first (only
-- when they are the old ones: a running store keeps calling them).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_proc p
        WHERE p.proname = 'append_events_in_group'
          AND p.pronamespace = (SELECT relnamespace FROM pg_class WHERE oid = {table_name}::regclass)
          AND NOT 'first_sequence' = ANY(coalesce(p.proargnames, ARRAY[]::text[]))
    ) THEN
        DROP FUNCTION {schema}.append_events_in_group(text[], integer[], integer[], uuid[],
            text[], integer[], bytea[], text[], text[], text[], uuid[], uuid[], timestamptz[],
            text[]);
        DROP FUNCTION {schema}.append_events(text, integer, uuid[], text[], integer[], bytea[],
            text[], text[], text[], uuid[], uuid[], timestamptz[], text[]);
    END IF;
END
$$;

-- One row per command (casetrail_platform/decide.py): its id (service, actor and idempotency key),
-- the stream, first event and first position it recorded. The first event's id carries the
-- request's fingerprint (casetrail_platform/commands.py). Written by append_events in the
-- transaction of the command's events, so two replicas given two requests under one key record
-- one of them, whichever streams they write. Made once; a table made before it existed gets a
-- row for every causation id already stored (follow-ups' causation ids, which are event ids, come
-- along and never equal a command id), under the append lock so no append slips between.
DO $$
BEGIN
    IF to_regclass({commands_name}) IS NULL THEN
        PERFORM pg_advisory_xact_lock({lock_class}, {table_name}::regclass::oid::integer);
        CREATE TABLE {schema}.recorded_commands (
            first_position  bigint  NOT NULL,
            command_id      uuid    NOT NULL,
            first_event_id  uuid    NOT NULL,
            stream          text    NOT NULL,
            CONSTRAINT recorded_commands_pkey PRIMARY KEY (command_id)
        );
        INSERT INTO {schema}.recorded_commands (first_position, command_id, first_event_id, stream)
        SELECT DISTINCT ON (e.causation_id) e.position, e.causation_id, e.event_id, e.stream
        FROM {schema}.stored_events e
        WHERE e.causation_id IS NOT NULL
        ORDER BY e.causation_id, e.position;
        CREATE TRIGGER recorded_commands_are_immutable
            BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.recorded_commands
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
    END IF;
END
$$;

-- The functions below took no command until the table above existed. Their older signatures
-- are left in place (other overloads, not replaced): a replica not yet upgraded keeps calling
-- them during a rolling upgrade, and records its commands without the table until it is.
--
-- Appends a batch to one stream atomically and returns the first position and the recorded-at
-- time shared by the whole batch, and the sequence of its first event. Raises CT001 (DETAIL: the
-- stream's actual version) when the stream is not at p_expected, CT004 when p_command (the
-- command the batch records, NULL for appends that are not a command's) is already recorded. p_expected = -1 (ANY_VERSION
-- in casetrail_platform/store/port.py) appends after the stream's newest event, whatever it is:
-- under the lock below nobody else can append meanwhile, so it never conflicts.
--
-- Gap-free reading: every append holds one transaction-level advisory lock from before it
-- picks positions until after its commit is visible (PostgreSQL releases heavyweight locks
-- only after the commit is visible to new snapshots). Appends therefore commit in position
-- order, and a reader that sees position N sees every position below N: read_all can never
-- skip an event that commits later. Positions are max + 1 under that lock, so they are also
-- dense (a failed append leaves no hole, unlike a sequence).
--
-- Why an advisory lock rather than LOCK TABLE ... IN EXCLUSIVE MODE: both serialise appenders
-- the same way, but EXCLUSIVE conflicts with the SHARE UPDATE EXCLUSIVE lock of VACUUM and
-- ANALYZE. Autovacuum is only cancelled after deadlock_timeout, and an anti-wraparound vacuum
-- of this insert-only table is never cancelled, so appends would stall behind it. The
-- advisory lock is keyed on this table's oid, so stores in other schemas do not wait on it.
CREATE OR REPLACE FUNCTION {schema}.append_events(
    p_stream          text,
    p_expected        integer,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            bytea[],
    p_sources         text[],
    p_actor_ids       text[],
    p_actor_roles     text[],
    p_correlation_ids uuid[],
    p_causation_ids   uuid[],
    p_occurred_at     timestamptz[],
    p_subjects        text[],
    p_trace_parents   text[],
    p_command         uuid,
    OUT first_position bigint,
    OUT recorded_at    timestamptz,
    OUT first_sequence integer
)
LANGUAGE plpgsql AS $$
DECLARE
    v_actual      integer;
    v_last        bigint;
    v_last_time   timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock({lock_class}, {table_name}::regclass::oid::integer);

    SELECT coalesce(max(e.sequence), 0) INTO v_actual
    FROM {schema}.stored_events e WHERE e.stream = p_stream;
    IF p_expected = -1 THEN
        p_expected := v_actual;
    ELSIF v_actual <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream, v_actual, p_expected
            USING ERRCODE = 'CT001', DETAIL = v_actual::text;
    END IF;

    SELECT e.position, e.recorded_at INTO v_last, v_last_time
    FROM {schema}.stored_events e ORDER BY e.position DESC LIMIT 1;
    first_position := coalesce(v_last, 0) + 1;
    first_sequence := p_expected + 1;
    -- never earlier than the event before it, even if the clock steps back
    recorded_at := greatest(clock_timestamp(), v_last_time);

    IF p_command IS NOT NULL THEN
        INSERT INTO {schema}.recorded_commands (first_position, command_id, first_event_id, stream)
        VALUES (first_position, p_command, p_event_ids[1], p_stream)
        ON CONFLICT (command_id) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'command % is already recorded', p_command
                USING ERRCODE = 'CT004';
        END IF;
    END IF;

    INSERT INTO {schema}.stored_events (
        position, occurred_at, recorded_at, sequence, schema_version, event_id,
        correlation_id, causation_id, stream, event_type, source, actor_id, actor_role, subject,
        data, trace_parent)
    SELECT first_position + n.ordinal - 1, n.occurred_at, recorded_at, p_expected + n.ordinal,
           n.schema_version, n.event_id, n.correlation_id, n.causation_id, p_stream,
           n.event_type, n.source, n.actor_id, n.actor_role, n.subject, n.data, n.trace_parent
    FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_sources,
                p_actor_ids, p_actor_roles, p_correlation_ids, p_causation_ids, p_occurred_at,
                p_subjects, p_trace_parents)
         WITH ORDINALITY AS n(event_id, event_type, schema_version, data, source, actor_id,
                              actor_role, correlation_id, causation_id, occurred_at, subject,
                              trace_parent, ordinal);

    -- delivered to listeners only when (and if) this transaction commits
    PERFORM pg_notify({channel}, (first_position + cardinality(p_event_ids) - 1)::text);
END
$$;

-- Group commit: appends several requests in ONE transaction (one round trip, one WAL flush),
-- each as it would append alone. p_counts[i] events of the flattened arrays belong to request
-- i, in order. Each request runs append_events in its own sub-block (a savepoint), so a
-- request that fails (wrong version, taken event id, bad value) is rolled back alone, with its
-- NOTIFY, and is reported in its row; the others stay. A later request sees the earlier ones'
-- rows, so requests on one stream behave exactly as if sent one after the other.
--
-- The lock is taken here, before any sub-block: a lock first taken inside a sub-block that
-- fails would be released with it, and the group would no longer commit in position order.
-- One row per request, in request order: first_position, recorded_at and first_sequence on
-- success, else
-- error_state (the SQLSTATE) with the error's detail, constraint and message.
--
-- p_guard_streams[i] / p_guard_versions[i] (NULL: none): another stream request i's decision
-- read, which must still be at that version (StreamVersion in casetrail_platform/store/port.py);
-- else CT005, DETAIL the guarded stream's actual version, and the request writes nothing. The
-- check is made under the append lock, and every append takes that lock, so nothing can be
-- appended to the guarded stream between the check and the commit, and a statement after the
-- lock sees every append committed before it (READ COMMITTED takes a snapshot per statement;
-- the lock is released only once the commit is visible). That is why neither SELECT ... FOR
-- SHARE nor SERIALIZABLE is used: a row lock on the guarded stream's last event would not stop
-- another event from being inserted after it (an insert locks no existing row), and
-- SERIALIZABLE would add a whole class of serialisation failures to every append for what the
-- lock already gives. A request's check sees what the requests before it in the group appended.
-- The overloads without the guards or their locks (a replica not yet upgraded calls them) are
-- left in place.
--
-- p_guard_locks[i] (NULL: none): the advisory-lock key of StreamVersion.lock, the key of a
-- session lock casetrail_platform/locking/postgres.py holds exclusively (an erasure of a client,
-- from its look at the client's cases to its commit). Request i takes it shared, transaction
-- level, so held to this group's commit: a section taking it exclusively meanwhile waits for
-- the commit, then sees request i's rows. It is only *tried*: a request whose lock is held is
-- refused CT006 (GuardLockHeld, a lost race like CT005's), and its caller reads again and
-- retries (casetrail_platform/decide.py) until the holder has committed and released it, then
-- sees what the holder appended, or, its retry budget spent, is answered ABORTED LOCK_HELD. Waiting here instead would deadlock: this transaction holds
-- the append lock, which the holder's own append needs before it releases; and, waiting before
-- the append lock, the group would hold this process's one writer connection, behind which the
-- holder's append may be queued in the same process. A try never waits, so no append ever
-- waits on a lock section, and one request refused leaves the rest of its group to commit. The
-- lock is taken in the request's sub-block: refused (guard, version), it is released with it.
-- An exclusive holder still waiting for the shared holders' commits (an erasure about to look)
-- makes later tries fail too (PostgreSQL queues it ahead of new conflicting requests), so a
-- stream of openings cannot starve it; a later request of the same group on the same lock gets
-- it at once (this transaction holds it already).
CREATE OR REPLACE FUNCTION {schema}.append_events_in_group(
    p_streams         text[],
    p_expected        integer[],
    p_counts          integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_data            bytea[],
    p_sources         text[],
    p_actor_ids       text[],
    p_actor_roles     text[],
    p_correlation_ids uuid[],
    p_causation_ids   uuid[],
    p_occurred_at     timestamptz[],
    p_subjects        text[],
    p_trace_parents   text[],
    p_commands        uuid[],
    p_guard_streams   text[],
    p_guard_versions  integer[],
    p_guard_locks     bigint[]
)
RETURNS TABLE (
    first_position   bigint,
    recorded_at      timestamptz,
    first_sequence   integer,
    error_state      text,
    error_detail     text,
    error_constraint text,
    error_message    text
)
LANGUAGE plpgsql AS $$
DECLARE
    v_from    integer := 1;
    v_to      integer;
    v_guarded integer;
BEGIN
    PERFORM pg_advisory_xact_lock({lock_class}, {table_name}::regclass::oid::integer);

    FOR i IN 1 .. coalesce(cardinality(p_streams), 0) LOOP
        v_to := v_from + p_counts[i] - 1;
        first_position := NULL;
        recorded_at := NULL;
        first_sequence := NULL;
        error_state := NULL;
        error_detail := NULL;
        error_constraint := NULL;
        error_message := NULL;
        BEGIN
            IF p_guard_locks[i] IS NOT NULL
               AND NOT pg_try_advisory_xact_lock_shared(p_guard_locks[i]) THEN
                RAISE EXCEPTION 'the lock of guarded stream % is held', p_guard_streams[i]
                    USING ERRCODE = 'CT006';
            END IF;
            IF p_guard_streams[i] IS NOT NULL THEN
                SELECT coalesce(max(e.sequence), 0) INTO v_guarded
                FROM {schema}.stored_events e WHERE e.stream = p_guard_streams[i];
                IF v_guarded <> p_guard_versions[i] THEN
                    RAISE EXCEPTION 'guarded stream % is at version %, expected %',
                        p_guard_streams[i], v_guarded, p_guard_versions[i]
                        USING ERRCODE = 'CT005', DETAIL = v_guarded::text;
                END IF;
            END IF;
            SELECT a.first_position, a.recorded_at, a.first_sequence
            INTO first_position, recorded_at, first_sequence
            FROM {schema}.append_events(
                p_streams[i], p_expected[i], p_event_ids[v_from:v_to],
                p_event_types[v_from:v_to], p_schema_versions[v_from:v_to],
                p_data[v_from:v_to], p_sources[v_from:v_to], p_actor_ids[v_from:v_to],
                p_actor_roles[v_from:v_to], p_correlation_ids[v_from:v_to],
                p_causation_ids[v_from:v_to], p_occurred_at[v_from:v_to],
                p_subjects[v_from:v_to], p_trace_parents[v_from:v_to], p_commands[i]) AS a;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS
                error_state = RETURNED_SQLSTATE,
                error_detail = PG_EXCEPTION_DETAIL,
                error_constraint = CONSTRAINT_NAME,
                error_message = MESSAGE_TEXT;
        END;
        RETURN NEXT;
        v_from := v_to + 1;
    END LOOP;
END
$$;
