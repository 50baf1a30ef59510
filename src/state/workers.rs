//! Apply workers and their claims. Every `lethe apply` is a worker with a
//! random id and a heartbeat row; it claims a batch of open plan items by
//! writing its id on them. A claim is honoured while its worker's heartbeat
//! is fresh; a dead worker's claims are taken over by the next claim.
//!
//! On PostgreSQL several workers, on one machine or many, share one plan:
//! claims skip rows another worker is claiming (`FOR UPDATE SKIP LOCKED`),
//! and a worker journals only the items it still holds, so each item is
//! executed and audited exactly once. On SQLite the apply lock admits one
//! worker, so every open item is its to take.

use std::time::Duration;

use super::status::CaseStatus;
use super::{Dialect, StateError, StateStore, q};
use crate::model::EntityKey;

/// A case claimed for apply, as the plan stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedCase {
    pub case_id: u64,
    pub policy: String,
    pub root_type: String,
    pub root_key: EntityKey,
    /// Journaled `executing` by an earlier run (whose worker died): the
    /// CRM may have deleted its rows already.
    pub resumed: bool,
}

/// Which plan table a claim is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Items {
    Cases,
    Objects,
}

impl Items {
    fn table(self) -> &'static str {
        match self {
            Items::Cases => "plan_cases",
            Items::Objects => "plan_objects",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Items::Cases => "case_id",
            Items::Objects => "item",
        }
    }
}

/// One apply process, registered while it runs. Dropping it stops the
/// heartbeat; `finish` also removes its row.
pub struct Worker {
    pub id: String,
    state: StateStore,
    plan_id: String,
    /// A claim older than this without a heartbeat is taken over.
    pub timeout: Duration,
    beat: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl StateStore {
    /// Registers a worker for `plan_id` and starts its heartbeat (every
    /// quarter of `timeout`).
    pub async fn start_worker(
        &self,
        plan_id: &str,
        timeout: Duration,
    ) -> Result<Worker, StateError> {
        // Rows of workers dead for a day go (their claims, if any, are
        // taken over whether or not the row is there).
        sqlx::query("DELETE FROM workers WHERE heartbeat < $1")
            .bind(now_ms() - 86_400_000)
            .execute(&self.pool)
            .await
            .map_err(q("registering the worker"))?;
        let id = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(
            "INSERT INTO workers(id, plan_id, started_at, heartbeat) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(plan_id)
        .bind(jiff::Timestamp::now().to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(q("registering the worker"))?;
        let beat = {
            let pool = self.pool.clone();
            let id = id.clone();
            let every = (timeout / 4).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // A missed beat is not fatal: the claims stay ours until
                    // the timeout, and journaling checks ownership anyway.
                    let _ = sqlx::query("UPDATE workers SET heartbeat = $1 WHERE id = $2")
                        .bind(now_ms())
                        .bind(&id)
                        .execute(&pool)
                        .await;
                }
            })
        };
        Ok(Worker {
            id,
            state: self.clone(),
            plan_id: plan_id.to_string(),
            timeout,
            beat,
        })
    }
}

impl StateStore {
    /// Apply workers (on any plan) whose heartbeat is younger than
    /// `timeout`: what `lethe check` reports.
    pub async fn live_workers(&self, timeout: Duration) -> Result<i64, StateError> {
        sqlx::query_scalar("SELECT count(*) FROM workers WHERE heartbeat >= $1")
            .bind(now_ms() - timeout.as_millis() as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the workers"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.beat.abort();
    }
}

impl Worker {
    /// Workers on this plan whose heartbeat is fresh, this one included.
    pub async fn live_workers(&self) -> Result<i64, StateError> {
        sqlx::query_scalar("SELECT count(*) FROM workers WHERE plan_id = $1 AND heartbeat >= $2")
            .bind(&self.plan_id)
            .bind(self.cutoff())
            .fetch_one(&self.state.pool)
            .await
            .map_err(q("reading the workers"))
    }

    /// Heartbeats at or after this are alive. On SQLite the apply lock
    /// admits one worker, so no other is alive.
    fn cutoff(&self) -> i64 {
        match self.state.dialect {
            Dialect::Sqlite => i64::MAX,
            Dialect::Postgres => now_ms() - self.timeout.as_millis() as i64,
        }
    }

    /// Claims up to `limit` open items (planned, or executing under a dead
    /// worker's claim), lowest first; returns their ids. Never this
    /// worker's own claims: a batch it holds is in flight.
    pub async fn claim(&self, items: Items, limit: usize) -> Result<Vec<i64>, StateError> {
        Ok(self
            .claim_rows::<(i64,)>(items, limit, "", false)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect())
    }

    /// Claims like `claim` and returns each item's id, then `columns` (as
    /// they were before the claim: a `status` column tells a resumed item).
    /// With `executing`, the claim is also the journal's intent: the items
    /// go `executing` and their attempts count up, in the same transaction.
    /// The rows come as one JSON text (`T`: a tuple of the id and the
    /// columns), not row by row (see `StateStore::json_rows`).
    pub async fn claim_rows<T: serde::de::DeserializeOwned + IdFirst>(
        &self,
        items: Items,
        limit: usize,
        columns: &str,
        executing: bool,
    ) -> Result<Vec<T>, StateError> {
        let (table, id) = (items.table(), items.id());
        let lock = match self.state.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let columns = if columns.is_empty() {
            String::new()
        } else {
            format!(", {columns}")
        };
        // SQLite admits one worker, so a claim that journals nothing (the
        // objects') need not be written: reading the open items is enough.
        let write = executing || self.state.dialect == Dialect::Postgres;
        let mut tx = if write {
            self.state.begin_write().await
        } else {
            self.state.pool.begin().await
        }
        .map_err(q("claiming work"))?;
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM (
               SELECT {id}{columns} FROM {table}
               WHERE plan_id = $1 AND status IN ('planned', 'executing')
                 AND (claimed_by IS NULL
                      OR (claimed_by <> $2
                          AND claimed_by NOT IN (SELECT id FROM workers WHERE heartbeat >= $3)))
               ORDER BY {id} LIMIT $4 {lock}) AS open_items",
            self.state.json_rows(&format!("{id}{columns}"))
        )))
        .bind(&self.plan_id)
        .bind(&self.id)
        .bind(self.cutoff())
        .bind(limit as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("claiming work"))?;
        let mut rows: Vec<T> = super::parse_json_rows(&text, "claiming work")?;
        // Lowest first, as claimed (an aggregate keeps no order).
        rows.sort_by_key(IdFirst::id);
        let ids: Vec<i64> = rows.iter().map(IdFirst::id).collect();
        let intent = if executing {
            ", status = 'executing', attempts = attempts + 1"
        } else {
            ""
        };
        if !write {
            tx.commit().await.map_err(q("claiming work"))?;
            return Ok(rows);
        }
        let plan = [self.plan_id.as_str(), self.id.as_str()];
        super::exec_in(
            &mut tx,
            &format!(
                "UPDATE {table} SET claimed_by = $2{intent} WHERE plan_id = $1 AND {id} IN ({{in}})"
            ),
            &plan,
            &ids,
        )
        .await?;
        tx.commit().await.map_err(q("claiming work"))?;
        Ok(rows)
    }

    /// Claims the next `limit` open cases with intent (they go `executing`,
    /// see `claim_rows`), lowest first.
    pub async fn claim_cases(&self, limit: usize) -> Result<Vec<ClaimedCase>, StateError> {
        let rows = self
            .claim_rows::<(i64, String, String, String, String, String)>(
                Items::Cases,
                limit,
                "policy, root_type, root_key, root_kind, status",
                true,
            )
            .await?;
        rows.into_iter()
            .map(
                |(case_id, policy, root_type, root_key, root_kind, status)| {
                    let status = CaseStatus::parse(&status).ok_or_else(|| {
                        StateError::Corrupt(format!(
                            "case status `{status}` is not one lethe writes"
                        ))
                    })?;
                    Ok(ClaimedCase {
                        case_id: case_id as u64,
                        policy,
                        root_type,
                        root_key: EntityKey::from_stored(root_kind.as_str(), root_key.as_str())
                            .unwrap_or(EntityKey::Text(root_key)),
                        resumed: status == CaseStatus::Executing,
                    })
                },
            )
            .collect()
    }

    /// Of `ids`, the ones this worker still holds; inside `tx` they stay
    /// held (row locks on PostgreSQL) until it commits. Journal only these:
    /// the rest were taken over, and their new holder journals them.
    pub async fn still_mine(
        &self,
        tx: &mut sqlx::AnyConnection,
        items: Items,
        ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, StateError> {
        if self.state.dialect == Dialect::Sqlite {
            return Ok(ids.iter().copied().collect());
        }
        let (table, id) = (items.table(), items.id());
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(400) {
            let sql = format!(
                "SELECT {id} FROM {table} WHERE plan_id = $1 AND claimed_by = $2 AND {id} IN ({}) FOR UPDATE",
                super::params(chunk.len(), "?", 3)
            );
            let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(&self.plan_id)
                .bind(&self.id);
            for i in chunk {
                query = query.bind(*i);
            }
            out.extend(
                query
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(q("checking claims"))?,
            );
        }
        Ok(out)
    }

    /// Gives back claimed items nothing was done with yet (a batch claimed
    /// ahead when the run stops): as they were before `claim_rows` with
    /// `executing` took them. `fresh` items go back to `planned`; `resumed`
    /// ones (`executing` under a dead worker's claim when taken) stay
    /// `executing`, so that the next run still knows a crashed run may have
    /// deleted them. Only rows this worker still holds change.
    pub async fn release(
        &self,
        items: Items,
        fresh: &[i64],
        resumed: &[i64],
    ) -> Result<(), StateError> {
        let (table, id) = (items.table(), items.id());
        let mut tx = self
            .state
            .begin_write()
            .await
            .map_err(q("releasing claims"))?;
        let plan = [self.plan_id.as_str(), self.id.as_str()];
        for (ids, status) in [(fresh, ", status = 'planned'"), (resumed, "")] {
            super::exec_in(
                &mut tx,
                &format!(
                    "UPDATE {table} SET claimed_by = NULL{status}, attempts = attempts - 1
                     WHERE plan_id = $1 AND claimed_by = $2 AND status = 'executing' AND {id} IN ({{in}})"
                ),
                &plan,
                ids,
            )
            .await?;
        }
        tx.commit().await.map_err(q("releasing claims"))?;
        Ok(())
    }

    /// Open items this worker does not hold: held by live workers (they
    /// may still finish them) or by dead ones (the next claim takes them
    /// over once their heartbeat is stale). Zero means the phase is over.
    pub async fn open_elsewhere(&self, items: Items) -> Result<i64, StateError> {
        let table = items.table();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table}
             WHERE plan_id = $1 AND status IN ('planned', 'executing')
               AND (claimed_by IS NULL OR claimed_by <> $2)"
        )))
        .bind(&self.plan_id)
        .bind(&self.id)
        .fetch_one(&self.state.pool)
        .await
        .map_err(q("reading the workers"))
    }

    /// Removes this worker's row; its claims are all journaled by now.
    pub async fn finish(self) -> Result<(), StateError> {
        self.beat.abort();
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(&self.id)
            .execute(&self.state.pool)
            .await
            .map_err(q("removing the worker"))?;
        Ok(())
    }
}

/// This machine's name, for the worker id (operators read it in
/// `workers`); never personal data.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(40)
                .collect()
        })
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

/// A claimed row: its id first.
pub trait IdFirst {
    fn id(&self) -> i64;
}

impl IdFirst for (i64,) {
    fn id(&self) -> i64 {
        self.0
    }
}

impl<B, C, D, E, F> IdFirst for (i64, B, C, D, E, F) {
    fn id(&self) -> i64 {
        self.0
    }
}
