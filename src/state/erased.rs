//! The `erased_identifiers` table: what is left of an erased person's
//! identifiers — the keyed hash of each normalised value (never the
//! value), the kind, and the pseudonym of the entity it identified. Written
//! in the transaction that journals the entity's deletion (a resumed apply
//! still verifies); read by the residual scan of verify, and, later, as the
//! suppression list.

use super::{StateError, StateStore, q};

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// One erased identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedIdentifier {
    /// Hex HMAC-SHA256(audit key, kind ‖ 0 ‖ normalised value).
    pub hash: String,
    /// `email` or `phone`.
    pub kind: String,
    /// The entity's pseudonym (as in the audit log).
    pub entity: String,
}

/// Records identifiers erased by `plan_id`, in the caller's transaction;
/// one already recorded (a resumed batch, the same value twice) is kept once.
pub async fn record(
    tx: &mut Tx<'_>,
    plan_id: &str,
    at: &str,
    rows: &[ErasedIdentifier],
) -> Result<(), StateError> {
    let sqlite = super::is_sqlite(tx);
    for chunk in rows.chunks(150) {
        let sql = format!(
            "INSERT INTO erased_identifiers(hash, kind, entity, plan_id, erased_at) VALUES {}
             ON CONFLICT DO NOTHING",
            super::params(chunk.len(), "(?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for r in chunk {
            query = query
                .bind(r.hash.clone())
                .bind(r.kind.clone())
                .bind(r.entity.clone())
                .bind(plan_id)
                .bind(at);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("recording erased identifiers"))?;
    }
    Ok(())
}

/// The identifiers `plan_id` erased, `page` at a time after `after` (a
/// hash and entity; keyset order).
pub async fn of_plan(
    state: &StateStore,
    plan_id: &str,
    after: Option<(&str, &str)>,
    page: i64,
) -> Result<Vec<ErasedIdentifier>, StateError> {
    let (h, e) = after.unwrap_or(("", ""));
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT hash, kind, entity FROM erased_identifiers
         WHERE plan_id = $1 AND (hash > $2 OR (hash = $2 AND entity > $3))
         ORDER BY hash, entity LIMIT $4",
    )
    .bind(plan_id)
    .bind(h)
    .bind(e)
    .bind(page)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading erased identifiers"))?;
    Ok(rows
        .into_iter()
        .map(|(hash, kind, entity)| ErasedIdentifier { hash, kind, entity })
        .collect())
}
