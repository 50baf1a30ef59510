//! Writes the demo's sample CRM: a SQLite database of leads,
//! opportunities, quotes and contracts (`SCHEMA`), one row a call, in
//! transactions of the writer's choosing; and the demo's one question to it
//! (an old lead to put on hold). The values come from `demo::generate`; the
//! statements are here, with the other SQL lethe speaks to a CRM.

use std::path::Path;

use sqlx::{Sqlite, Transaction};

use super::CrmError;
use super::sqlite::SqliteCrm;

/// The sample CRM's tables: what `lethe demo`'s config and the tests'
/// fixtures describe.
pub const SCHEMA: &str = r#"
CREATE TABLE leads (
    id INTEGER PRIMARY KEY,
    first_name TEXT, last_name TEXT, email TEXT, phone TEXT, company TEXT,
    status TEXT NOT NULL,
    created_at TEXT,
    modified_at TEXT
);
CREATE TABLE opportunities (
    id INTEGER PRIMARY KEY,
    lead_id INTEGER NOT NULL REFERENCES leads(id),
    name TEXT, stage TEXT NOT NULL, amount REAL,
    modified_at TEXT
);
CREATE INDEX opportunities_lead ON opportunities(lead_id);
CREATE TABLE quotes (
    id INTEGER PRIMARY KEY,
    opportunity_id INTEGER NOT NULL REFERENCES opportunities(id),
    total REAL,
    modified_at TEXT
);
CREATE INDEX quotes_opportunity ON quotes(opportunity_id);
CREATE TABLE contracts (
    id INTEGER PRIMARY KEY,
    quote_id INTEGER NOT NULL REFERENCES quotes(id),
    signed_at TEXT,
    modified_at TEXT
);
CREATE INDEX contracts_quote ON contracts(quote_id);
"#;

/// A row of `leads`. Clocks are instants as text (`model::format_instant`);
/// `None` for a lead without a date.
pub struct Lead<'a> {
    pub id: i64,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub company: &'a str,
    pub status: &'a str,
    pub created_at: Option<String>,
    pub modified_at: Option<String>,
}

/// A row of `opportunities`.
pub struct Opportunity<'a> {
    pub id: i64,
    pub lead_id: i64,
    pub name: &'a str,
    pub stage: &'a str,
    pub amount: f64,
    pub modified_at: String,
}

/// A row of `quotes`.
pub struct Quote {
    pub id: i64,
    pub opportunity_id: i64,
    pub total: f64,
    pub modified_at: String,
}

/// A row of `contracts`.
pub struct Contract {
    pub id: i64,
    pub quote_id: i64,
    pub signed_at: String,
    pub modified_at: String,
}

fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> CrmError {
    move |source| CrmError::Sample { what, source }
}

/// Writes the sample CRM, inside one open transaction at a time.
pub struct SampleWriter {
    crm: SqliteCrm,
    tx: Transaction<'static, Sqlite>,
}

impl SampleWriter {
    /// Creates the database at `path` with [`SCHEMA`] and opens the first
    /// transaction.
    pub async fn create(path: &Path) -> Result<SampleWriter, CrmError> {
        let crm = SqliteCrm::open(path, true).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(SCHEMA))
            .execute(crm.pool())
            .await
            .map_err(failed("creating the demo CRM schema"))?;
        let tx = crm
            .pool()
            .begin()
            .await
            .map_err(failed("beginning a transaction"))?;
        Ok(SampleWriter { crm, tx })
    }

    pub async fn lead(&mut self, l: &Lead<'_>) -> Result<(), CrmError> {
        sqlx::query("INSERT INTO leads VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(l.id)
            .bind(l.first_name)
            .bind(l.last_name)
            .bind(l.email)
            .bind(l.phone)
            .bind(l.company)
            .bind(l.status)
            .bind(l.created_at.as_deref())
            .bind(l.modified_at.as_deref())
            .execute(&mut *self.tx)
            .await
            .map_err(failed("writing a lead"))?;
        Ok(())
    }

    pub async fn opportunity(&mut self, o: &Opportunity<'_>) -> Result<(), CrmError> {
        sqlx::query("INSERT INTO opportunities VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(o.id)
            .bind(o.lead_id)
            .bind(o.name)
            .bind(o.stage)
            .bind(o.amount)
            .bind(o.modified_at.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(failed("writing an opportunity"))?;
        Ok(())
    }

    pub async fn quote(&mut self, q: &Quote) -> Result<(), CrmError> {
        sqlx::query("INSERT INTO quotes VALUES ($1, $2, $3, $4)")
            .bind(q.id)
            .bind(q.opportunity_id)
            .bind(q.total)
            .bind(q.modified_at.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(failed("writing a quote"))?;
        Ok(())
    }

    pub async fn contract(&mut self, c: &Contract) -> Result<(), CrmError> {
        sqlx::query("INSERT INTO contracts VALUES ($1, $2, $3, $4)")
            .bind(c.id)
            .bind(c.quote_id)
            .bind(c.signed_at.as_str())
            .bind(c.modified_at.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(failed("writing a contract"))?;
        Ok(())
    }

    /// Commits what was written and opens the next transaction.
    pub async fn checkpoint(self) -> Result<SampleWriter, CrmError> {
        self.tx
            .commit()
            .await
            .map_err(failed("committing the sample rows"))?;
        let tx = self
            .crm
            .pool()
            .begin()
            .await
            .map_err(failed("beginning a transaction"))?;
        Ok(SampleWriter { crm: self.crm, tx })
    }

    /// Commits what was written; the writer is done.
    pub async fn finish(self) -> Result<(), CrmError> {
        self.tx
            .commit()
            .await
            .map_err(failed("committing the sample rows"))
    }
}

/// The first lead (by id) of the sample CRM at `path` last modified before
/// `before` (an instant as text), if there is one.
pub async fn first_lead_modified_before(
    path: &Path,
    before: &str,
) -> Result<Option<i64>, CrmError> {
    let crm = SqliteCrm::open(path, false).await?;
    sqlx::query_scalar("SELECT id FROM leads WHERE modified_at < $1 ORDER BY id LIMIT 1")
        .bind(before)
        .fetch_optional(crm.pool())
        .await
        .map_err(failed("reading an old lead"))
}
