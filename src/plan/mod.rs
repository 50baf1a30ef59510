//! Stage 3, plan: reads the CRM into the entity graph, evaluates the
//! policies, gives every indexed object its fate, applies the mass-delete
//! brake, and persists the result as an immutable plan before anything is
//! deleted. `plan` changes nothing outside the state store.
//!
//! `make_plan` (here) runs the steps: `world.rs` reads the CRM and the
//! holds into the graph, `evaluate` judges it, `summary.rs` counts what was
//! read and judged, `write.rs` writes the cases and entities, `objects.rs`
//! gives each indexed object its fate (`fate.rs`, pure) as the index
//! streams, `brake.rs` finds the reasons to stop, and `write.rs` writes the
//! rest and the plan's row, all in one transaction. `explain.rs`: the
//! explain document.
//!
//! Architecture invariant: `evaluate` and `plan` read the CRM, the index and
//! the holds, and write only the plan; every error while reading fails the
//! whole plan (fail closed: an empty read must never become "everything is an
//! orphan").

mod brake;
pub mod explain;
pub mod fate;
mod objects;
pub mod request;
mod summary;
mod world;
mod write;
/// `plan show` and `plan prune` read and prune the plan tables, which the
/// state store owns.
pub use crate::state::plans as show;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crm::{Crm, CrmError};
use crate::evaluate;
use crate::index;
use crate::model::Instant;
use crate::state::{StateError, StateStore, q};
pub use fate::{Fate, LinkTarget, object_fate};
use objects::ObjectPlan;
pub use summary::due_by_month;
pub use world::{World, component_graph, conditions, load_component, load_world};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("reading the CRM failed, so nothing was planned: {0}")]
    Crm(#[from] CrmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("listing the technical store failed: {0}")]
    Store(String),
    /// A configured table, column or keep condition is not in the CRM.
    #[error("the config does not fit the CRM")]
    Unfit(#[source] crate::config::ConfigError),
    #[error(transparent)]
    Suppression(Box<crate::suppression::SuppressionError>),
}

impl From<crate::suppression::SuppressionError> for PlanError {
    fn from(e: crate::suppression::SuppressionError) -> PlanError {
        PlanError::Suppression(Box::new(e))
    }
}

/// Counts only: a plan summary never holds keys or subject data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PlanSummary {
    pub id: String,
    pub as_of: String,
    pub created_at: String,
    pub config_hash: String,
    pub digest: String,
    pub entities_read: BTreeMap<String, u64>,
    pub undatable_entities: u64,
    pub unreadable_clocks: u64,
    pub dangling_parents: u64,
    /// The index run the plan read (`index.run` in the state store).
    #[serde(default)]
    pub index_run: Option<i64>,
    /// Foreign keys naming a parent that does not exist, per relation.
    #[serde(default)]
    pub dangling: Vec<DanglingRelation>,
    pub policies: Vec<PolicySummary>,
    pub cases: u64,
    pub cases_absorbed: u64,
    pub entities_to_delete: BTreeMap<String, u64>,
    pub objects: ObjectTally,
    pub holds: HoldTally,
    pub brake: Vec<String>,
    /// The subject request this plan erases for (its id); `None`: a sweep's
    /// plan. A request's plan has the request policies (`request:TYPE`: no
    /// retention period, every `keep_if`), reads only the subject's
    /// entities, and is never the brake's baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// CRM entities that carry an identifier of a person lethe erased (the
    /// suppression list): re-imported, for review (`plan show --fate
    /// reimported`); never deleted for it.
    #[serde(default)]
    pub reimported: u64,
    /// Cases (of every policy) becoming due in each of the 12 months after
    /// `as_of`, keyed `YYYY-MM`, all 12 present.
    #[serde(default)]
    pub due_by_month: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Rows of `entity` whose `column` names a `parent` the CRM does not have.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DanglingRelation {
    pub entity: String,
    pub parent: String,
    pub column: String,
    pub count: u64,
    /// Rows of `entity` read.
    pub of: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicySummary {
    pub name: String,
    pub root: String,
    pub retain: String,
    pub basis: String,
    /// Entities of the root type read: `due + kept + inside_due_case`.
    #[serde(default)]
    pub read: u64,
    pub due: u64,
    /// Of the due, those inside another due case (deleted as part of it,
    /// so counted under that case's policy in the journal).
    #[serde(default)]
    pub due_inside_other: u64,
    pub kept: BTreeMap<String, u64>,
    /// Never judged due themselves: inside a case another policy found due
    /// first (deleted with it).
    #[serde(default)]
    pub inside_due_case: u64,
    /// This policy's kept cases becoming due in each of the next 12
    /// calendar months (UTC), as `due_by_month` of the plan counts all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub due_by_month: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObjectTally {
    pub total: u64,
    pub delete: u64,
    pub delete_bytes: u64,
    pub orphan_delete: u64,
    pub orphan_delete_bytes: u64,
    pub orphan_young: u64,
    pub shared: u64,
    /// Shared objects rewritten without the deleted entities' records.
    #[serde(default)]
    pub redact: u64,
    #[serde(default)]
    pub redact_records: u64,
    #[serde(default)]
    pub redact_bytes: u64,
    /// Of `redact_records`, those of entities absent from the CRM (the
    /// orphans' rule).
    #[serde(default)]
    pub redact_absent_records: u64,
    /// The brake's measure: of those, the ones no earlier plan erased,
    /// against every record link of the indexed objects.
    #[serde(default)]
    pub redact_absent_suspect: u64,
    #[serde(default)]
    pub record_links: u64,
    pub retained: u64,
    pub unlinked: u64,
    pub unreadable: u64,
    pub held: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HoldTally {
    pub entity_holds: u64,
    pub entity_holds_on_absent: u64,
    pub object_holds: u64,
}

pub(crate) async fn index_run(state: &StateStore) -> Result<Option<i64>, StateError> {
    Ok(state
        .meta_get("index.run")
        .await?
        .and_then(|r| r.parse().ok()))
}

/// Why the link index cannot be trusted for a plan, if it cannot: never
/// built, older than the one the last plan read, or empty while the store
/// holds objects. A plan on such an index would delete entities and keep
/// every payload file that names them. `store` is asked only when the
/// index is empty.
pub async fn stale_index(
    config: &Config,
    state: &StateStore,
    store: &dyn crate::store::TechnicalStore,
) -> Result<Option<String>, PlanError> {
    let Some(run) = index_run(state).await? else {
        return Ok(Some(
            "the technical store was never indexed: run `lethe index` first (`lethe sweep` indexes by itself)".into(),
        ));
    };
    // Links read by other rules (an entity type renamed, a rule changed)
    // would make their entities look absent, or name others: the orphans'
    // rules would act on them.
    if state.meta_get("index.rules").await?.as_deref()
        != Some(crate::index::rules_hash(config).as_str())
    {
        return Ok(Some(
            "the link index was built with other link rules than this config's ([[technical.link]] or the byte bounds changed since): run `lethe index` first (`lethe sweep` indexes by itself)".into(),
        ));
    }

    let last = crate::state::plans::latest_summary(state).await?;
    if let Some(last) = last.and_then(|t| serde_json::from_str::<PlanSummary>(&t).ok())
        && let Some(seen) = last.index_run
        && seen > run
    {
        return Ok(Some(format!(
            "the link index (run {run}) is older than the one the last plan {} read (run {seen}); was the state store restored? run `lethe index` first",
            last.id
        )));
    }
    if state.indexed_count().await? == 0 {
        let mut listed = 0u64;
        store
            .list(&mut |_| listed += 1)
            .await
            .map_err(|e| PlanError::Store(e.to_string()))?;
        if listed > 0 {
            return Ok(Some(format!(
                "the link index is empty but the technical store holds {listed} objects: run `lethe index` first"
            )));
        }
    }
    Ok(None)
}

/// Fails unless every table, column and keep condition of the config is in
/// the CRM: nothing is read, judged or planned on a config that does not fit.
pub async fn require_fit(
    config: &Config,
    crm: &dyn Crm,
) -> Result<crate::crm::fit::Fit, PlanError> {
    let fit = crate::crm::fit::fit(config, crm).await?;
    if fit.problems.is_empty() {
        Ok(fit)
    } else {
        Err(PlanError::Unfit(config.invalid(fit.problems)))
    }
}

pub(crate) fn new_plan_id(now: jiff::Timestamp) -> String {
    let z = now.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    format!(
        "{}-{:04x}",
        z.strftime("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// Builds, brakes and persists a plan: reads the world, evaluates it,
/// summarises, then writes cases, entities, objects (each given its fate
/// as the index streams), the review, the brake and the plan's row in one
/// transaction. Returns its summary.
pub async fn make_plan(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    as_of: jiff::Timestamp,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<PlanSummary, PlanError> {
    let started = std::time::Instant::now();
    // One planner at a time (PostgreSQL state: across machines).
    let _planner = state.lock_plan(false).await?;
    require_fit(config, crm).await?;
    let world = load_world(config, crm, state, progress).await?;
    let as_of_s = as_of.as_second();
    progress("evaluating", 0);
    let eval = evaluate::evaluate(&world.graph, &world.policies, as_of_s);

    let now = jiff::Timestamp::now();
    let counts = world.graph.counts();
    let mut s = PlanSummary {
        id: new_plan_id(now),
        as_of: as_of.to_string(),
        created_at: jiff::Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        config_hash: config.hash.clone(),
        index_run: index_run(state).await?,
        ..summary::of_evaluation(config, &world, &eval, &counts, as_of)
    };

    // Re-imports: read before the plan's transaction opens.
    let reimported_review = reimported(config, crm, state, &mut s).await?;
    // Entities earlier plans erased and left objects behind for.
    let erased = crate::state::journal::erased_left_behind(state).await?;
    // Persist: plan row, cases, entities, then objects, in one transaction.
    progress("writing plan", 0);
    let mut digest = Sha256::new();
    let mut tx = state.begin_write().await.map_err(q("writing the plan"))?;
    // Cases and entities are written while the index streams past the
    // judgement of objects (another connection reads it): each object is
    // given its fate.
    let mut objects = ObjectPlan::new(config, &world, &eval, as_of_s).with_erased(erased);
    tokio::try_join!(
        async {
            write::cases(&mut tx, &s.id, &world, &eval, &mut digest)
                .await
                .map_err(PlanError::from)
        },
        async {
            index::for_each_entry(state, &mut |e| objects.add(e))
                .await
                .map_err(PlanError::from)
        },
    )?;
    let (tally, to_delete, mut review) = objects.finish();
    s.objects = tally;
    write::objects(&mut tx, &s.id, &to_delete, &mut digest).await?;
    review.extend(write::entity_review(&world.graph));
    review.extend(reimported_review);
    crate::state::plans::write_review(&mut tx, &s.id, &review).await?;
    s.brake = brake::brake(config, &s, &counts, &world.graph.types, &mut tx).await?;
    s.digest = hex::encode(digest.finalize());
    s.seconds = started.elapsed().as_secs_f64();
    write::plan(&mut tx, as_of_s, &s).await?;
    tx.commit().await.map_err(q("writing the plan"))?;
    Ok(s)
}

/// The CRM's entities that carry an identifier on the suppression list,
/// counted in `s` and listed for review (the first 1,000).
async fn reimported(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    s: &mut PlanSummary,
) -> Result<Vec<crate::state::plans::NewReview>, PlanError> {
    if config.entities.iter().all(|e| e.identifiers.is_empty()) {
        return Ok(Vec::new());
    }
    let Some(list) = crate::suppression::prefixes(state).await? else {
        return Ok(Vec::new());
    };
    let (found, count) =
        crate::suppression::reimported_entities(config, crm, state, &list, 1000).await?;
    s.reimported = count;
    Ok(found
        .into_iter()
        .map(|(t, k)| crate::state::plans::NewReview {
            kind: "reimported",
            entity_type: Some(t),
            key: k,
            size: None,
            fate: "reimported".into(),
            reason: Some(
                "carries an identifier of a person lethe erased (the suppression list)".into(),
            ),
            entities: None,
        })
        .collect())
}

/// A stored plan's header.
#[derive(Clone, Debug, Serialize)]
pub struct StoredPlan {
    pub id: String,
    pub as_of: Instant,
    pub status: PlanStatus,
    pub summary: PlanSummary,
    pub brake: Vec<String>,
}

/// The plan `id`, or the latest plan.
pub async fn load(state: &StateStore, id: Option<&str>) -> Result<StoredPlan, StateError> {
    let row = crate::state::plans::plan_row(state, id).await?;
    Ok(StoredPlan {
        id: row.id,
        as_of: row.as_of,
        status: row.status,
        summary: serde_json::from_str(&row.summary)
            .map_err(|e| StateError::Corrupt(format!("plan summary unreadable: {e}")))?,
        brake: row
            .brake
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default(),
    })
}

pub use crate::state::plans::{PlanListRow, PlanStatus, list};
