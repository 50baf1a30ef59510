//! The state store's tables, created or upgraded on open. `schema_version`
//! in `meta` records what is there; each step runs once, in a transaction.
//! The steps are written for SQLite; `postgres()` translates them (integer
//! widths, identity keys, byte-order collation, the trigger).

use super::{Dialect, LOCK_MIGRATE, StateError, StateStore, q};

pub(super) const STEPS: &[&str] = &[
    // 1: the first schema
    r#"
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);

CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    modified INTEGER,
    etag TEXT,
    status TEXT NOT NULL,          -- ok | unreadable
    error TEXT,                    -- why unreadable; never payload content
    seen_run INTEGER NOT NULL
);
CREATE TABLE links (
    object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    rule INTEGER NOT NULL,
    location TEXT
);
CREATE INDEX links_object ON links(object_id);

CREATE TABLE holds (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE(kind, target)
);

CREATE TABLE plans (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    as_of INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    digest TEXT NOT NULL,
    summary TEXT NOT NULL,          -- JSON: counts only
    brake TEXT,                     -- JSON list of reasons, or NULL
    status TEXT NOT NULL,           -- planned | applying | applied | partial
    audit_head TEXT
);
CREATE TABLE plan_cases (
    plan_id TEXT NOT NULL,
    case_id INTEGER NOT NULL,
    policy TEXT NOT NULL,
    root_type TEXT NOT NULL,
    root_key TEXT NOT NULL,
    root_kind TEXT NOT NULL,
    status TEXT NOT NULL,           -- planned | executing | done | skipped | failed
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (plan_id, case_id)
);
CREATE TABLE plan_entities (
    plan_id TEXT NOT NULL,
    case_id INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    key_kind TEXT NOT NULL,
    status TEXT NOT NULL,           -- planned | deleted | gone | skipped
    PRIMARY KEY (plan_id, entity_type, entity_key)
);
CREATE INDEX plan_entities_case ON plan_entities(plan_id, case_id);
CREATE TABLE plan_objects (
    plan_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    fate TEXT NOT NULL,             -- delete | orphan
    policy TEXT NOT NULL,           -- the policy (or `orphans`) that deletes it
    links TEXT NOT NULL,            -- digest of the link set at plan time
    status TEXT NOT NULL,           -- planned | executing | deleted | gone | skipped | failed
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (plan_id, item)
);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    plan_id TEXT NOT NULL,
    policy TEXT,
    basis TEXT,
    action TEXT NOT NULL,
    entity_type TEXT,
    pseudonym TEXT NOT NULL,
    bytes INTEGER,
    at TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
"#,
    // 2: links registered at ingest time (the HTTP API), and the service's runs
    r#"
CREATE TABLE registered_links (
    key TEXT NOT NULL,              -- object key
    entity_type TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (key, entity_type, entity_key)
);
-- An object that leaves the index (gone from the store, or deleted by
-- apply) takes its registered links with it.
CREATE TRIGGER objects_gone_registered AFTER DELETE ON objects
BEGIN
    DELETE FROM registered_links WHERE key = OLD.key;
END;

CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY,
    trigger TEXT NOT NULL,          -- schedule | catch-up | api | approval
    mode TEXT NOT NULL,             -- sweep | plan | apply
    scheduled_for TEXT,             -- the schedule tick it runs for
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,           -- running | done | partial | failed | awaiting-approval | interrupted
    plan_id TEXT,
    error TEXT,                     -- never keys or payload content
    summary TEXT                    -- JSON: counts only
);
"#,
    // 3: scale-out. Workers claim batches by writing their id; a claim is
    // theirs while their heartbeat is fresh.
    r#"
ALTER TABLE plan_cases ADD COLUMN claimed_by TEXT;
ALTER TABLE plan_objects ADD COLUMN claimed_by TEXT;
CREATE INDEX plan_cases_open ON plan_cases(plan_id, case_id) WHERE status IN ('planned', 'executing');
CREATE INDEX plan_objects_open ON plan_objects(plan_id, item) WHERE status IN ('planned', 'executing');
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat INTEGER NOT NULL      -- unix milliseconds
);
"#,
    // 4: holds are audited: who, and how long the reason was (never its text)
    r#"
ALTER TABLE audit ADD COLUMN author TEXT;
ALTER TABLE audit ADD COLUMN reason_chars INTEGER;
"#,
    // 5: plans removed by `plan prune`; their audit records stay, chained,
    // without a journal to compare them with
    r#"
CREATE TABLE pruned_plans (
    id TEXT PRIMARY KEY,
    pruned_at TEXT NOT NULL
);
"#,
    // 6: what a plan keeps, for review (`plan show --items`): each case's
    // clock, each object's linked entities, and the objects it does not
    // delete (shared, orphan young, unlinked, unreadable, held), the
    // undatable entities and the dangling parent references
    r#"
ALTER TABLE plan_cases ADD COLUMN case_clock INTEGER;
ALTER TABLE plan_objects ADD COLUMN entities TEXT;
CREATE TABLE plan_review (
    plan_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- object | undatable | dangling
    entity_type TEXT,              -- undatable, dangling: the entity's type
    key TEXT NOT NULL,             -- object key or entity key
    size INTEGER,
    fate TEXT NOT NULL,            -- object: its fate; dangling: the parent type
    reason TEXT,                   -- unreadable: why; dangling: the missing parent key
    entities TEXT,                 -- object: its links, as a JSON array of refs
    PRIMARY KEY (plan_id, item)
);
"#,
    // 7: redaction and residual verification. A link's record (a CSV row,
    // a JSON or XML rule's record element; NULL: the whole file); what a
    // planned redaction removes and what it wrote; the keyed hashes of the
    // identifiers of erased entities (never the values)
    r#"
-- and redacted (a plan_objects.status since this step)
ALTER TABLE links ADD COLUMN record TEXT;
ALTER TABLE plan_objects ADD COLUMN records TEXT;
ALTER TABLE plan_objects ADD COLUMN new_digest TEXT;
CREATE TABLE erased_identifiers (
    hash TEXT NOT NULL,            -- hex HMAC-SHA256(audit key, kind || 0 || normalised value)
    kind TEXT NOT NULL,            -- email | phone
    entity TEXT NOT NULL,          -- the entity's pseudonym
    plan_id TEXT NOT NULL,
    erased_at TEXT NOT NULL,
    case_id INTEGER,               -- the plan's case it was read for
    pending INTEGER NOT NULL DEFAULT 0,  -- 1: read before its case's delete, not yet journaled
    len INTEGER,                   -- the normalised value's length (the scan hashes only candidates of the lengths it holds)
    PRIMARY KEY (hash, entity)
);
CREATE INDEX erased_identifiers_plan ON erased_identifiers(plan_id);
ALTER TABLE audit ADD COLUMN detail TEXT;
ALTER TABLE plans ADD COLUMN verified TEXT;   -- the last verify of the plan, as JSON (pseudonyms and counts)
"#,
    // 8: subject requests (Art. 15, 17, 20), and the link index read by
    // entity (the objects of a request's entities)
    r#"
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- erase | access
    reference TEXT NOT NULL,       -- as the user gave it (a ticket number), never the subject's data
    received TEXT NOT NULL,        -- YYYY-MM-DD
    due TEXT NOT NULL,             -- received + 1 month (Art. 12(3))
    created_at TEXT NOT NULL,
    subject TEXT NOT NULL,         -- JSON: the kinds and keyed hashes of the identifiers given, the refs given
    entities TEXT,                 -- JSON: the refs the subject resolved to
    plan_id TEXT,
    status TEXT NOT NULL,          -- open | planned | done | done-with-kept
    done_at TEXT,
    summary TEXT                   -- JSON: counts only
);
CREATE INDEX requests_plan ON requests(plan_id);
ALTER TABLE plans ADD COLUMN kind TEXT;       -- NULL: a sweep's plan; request: a subject request's
CREATE INDEX links_entity ON links(entity_type, entity_key);
"#,
    // 9: the pending identifiers of a plan by case (a batch's journal step
    // confirms or drops its cases' rows: without it each step read every
    // identifier of the plan, quadratic in the plan's size)
    r#"
CREATE INDEX erased_identifiers_pending ON erased_identifiers(plan_id, case_id) WHERE pending = 1;
"#,
    // 10: a plan's identifiers in hash order (verify reads them a page at
    // a time, after the last one read: with only the index on `plan_id`
    // each page sorted every identifier of the plan, 0.29 s a page and
    // 19 s for the 650,000 of a 1M-lead sweep). It serves every query by
    // `plan_id` alone, so the old index goes.
    r#"
CREATE INDEX erased_identifiers_plan_hash ON erased_identifiers(plan_id, hash, entity);
DROP INDEX erased_identifiers_plan;
"#,
    // 11: identifiers staged while an apply deletes CRM rows, in the order
    // they are read, and moved into `erased_identifiers` sorted by hash
    // (`state::erased::flush`): its two indexes by hash took a random page
    // per identifier, 47 of the 71 s of the CRM phase at 1M leads.
    r#"
CREATE TABLE erased_staged (
    hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    entity TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    erased_at TEXT NOT NULL,
    case_id INTEGER,
    pending INTEGER NOT NULL,      -- 1: read before its case's delete, not yet journaled
    len INTEGER
);
CREATE INDEX erased_staged_pending ON erased_staged(plan_id, case_id) WHERE pending = 1;
CREATE INDEX erased_staged_confirmed ON erased_staged(plan_id) WHERE pending = 0;
"#,
    // 12: the objects earlier plans left behind (skipped or failed), read
    // by every sweep's plan (`state::journal::erased_left_behind`) without
    // a scan of every plan's objects.
    r#"
CREATE INDEX plan_objects_left ON plan_objects(plan_id) WHERE status IN ('skipped', 'failed');
"#,
];

/// The schema version a store has once migrated.
pub const VERSION: usize = STEPS.len();

const SQLITE_TRIGGER: &str = "CREATE TRIGGER objects_gone_registered AFTER DELETE ON objects
BEGIN
    DELETE FROM registered_links WHERE key = OLD.key;
END;";

const POSTGRES_TRIGGER: &str = "CREATE FUNCTION lethe_objects_gone_registered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM registered_links WHERE key = OLD.key;
    RETURN OLD;
END;
$$;
CREATE TRIGGER objects_gone_registered AFTER DELETE ON objects
FOR EACH ROW EXECUTE FUNCTION lethe_objects_gone_registered();";

/// A step in PostgreSQL's dialect: 64-bit integers throughout, identity
/// columns for SQLite's rowid keys, text compared byte by byte (as SQLite
/// does, so that both order keys alike), the trigger as a function.
fn postgres(step: &str) -> String {
    let mut s = step.replace(SQLITE_TRIGGER, POSTGRES_TRIGGER);
    s = s.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    );
    s = s.replace("INTEGER", "BIGINT");
    s = s.replace("TEXT", "TEXT COLLATE \"C\"");
    s
}

pub async fn migrate(store: &StateStore) -> Result<(), StateError> {
    let dialect = store.dialect();
    let mut tx = store
        .begin_write()
        .await
        .map_err(q("migrating the schema"))?;
    if dialect == Dialect::Postgres {
        // Several workers may start at once: one migrates, the others wait
        // and find the work done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_MIGRATE)
            .execute(&mut *tx)
            .await
            .map_err(q("locking the schema"))?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(q("creating the schema"))?;
    let version: Option<String> =
        sqlx::query_scalar("SELECT v FROM meta WHERE k = 'schema_version'")
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("reading the schema version"))?;
    let mut version: usize = version.and_then(|v| v.parse().ok()).unwrap_or(0);
    if version > STEPS.len() {
        return Err(StateError::Corrupt(format!(
            "schema version {version} is newer than this lethe knows ({}); upgrade lethe",
            STEPS.len()
        )));
    }
    while version < STEPS.len() {
        let step = match dialect {
            Dialect::Sqlite => STEPS[version].to_string(),
            Dialect::Postgres => postgres(STEPS[version]),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(step))
            .execute(&mut *tx)
            .await
            .map_err(q("migrating the schema"))?;
        version += 1;
        sqlx::query("INSERT INTO meta(k, v) VALUES ('schema_version', $1) ON CONFLICT(k) DO UPDATE SET v = excluded.v")
            .bind(version.to_string())
            .execute(&mut *tx)
            .await
            .map_err(q("migrating the schema"))?;
    }
    // An index run that writes most of the index drops the by-entity index
    // of links and builds it again at its end (`state::index::
    // suspend_entity_index`); a run that stopped between the two leaves it
    // to the next open.
    sqlx::raw_sql(sqlx::AssertSqlSafe(super::index::ENTITY_INDEX))
        .execute(&mut *tx)
        .await
        .map_err(q("restoring the index of links by entity"))?;
    tx.commit().await.map_err(q("migrating the schema"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_postgres_steps_translate_every_sqlite_only_construct() {
        for step in super::STEPS {
            let pg = super::postgres(step);
            assert!(!pg.contains("INTEGER"), "{pg}");
            assert!(
                !pg.contains("ON objects\nBEGIN"),
                "the SQLite trigger survived: {pg}"
            );
        }
        assert!(super::postgres(super::STEPS[1]).contains("EXECUTE FUNCTION"));
    }
}
