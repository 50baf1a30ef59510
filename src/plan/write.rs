//! The plan's rows, written in the plan's one transaction, each added to
//! the plan's digest as it is written (the digest an approval names): the
//! cases and their entities, the objects, what is kept for review, and the
//! plan's own row last.

use sha2::{Digest, Sha256};

use crate::evaluate::{self, Evaluation, Graph};
use crate::model::Instant;
use crate::state::StateError;
use crate::state::plans::{self, NewCase, NewEntity, NewObject, NewPlan, NewReview};

use super::{PlanSummary, World};

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// The due cases (each with the latest clock of the entities inside it)
/// and their entities.
pub(super) async fn cases(
    tx: &mut Tx<'_>,
    id: &str,
    world: &World,
    eval: &Evaluation,
    digest: &mut Sha256,
) -> Result<(), StateError> {
    let graph = &world.graph;
    // Each case's clock: the latest clock of the entities inside it.
    let mut case_clock: Vec<Option<Instant>> = vec![None; eval.cases.len()];
    for (n, &c) in eval.case_of.iter().enumerate() {
        if c != evaluate::NOT_DELETED {
            let slot = &mut case_clock[c as usize];
            *slot = (*slot).max(graph.nodes[n].clock);
        }
    }
    // In chunks of one statement each: the rows of a million cases are
    // never all held at once.
    let numbered: Vec<_> = eval.cases.iter().zip(&case_clock).enumerate().collect();
    for chunk in numbered.chunks(140) {
        let mut cases = Vec::with_capacity(chunk.len());
        for &(ci, (c, clock)) in chunk {
            let node = graph.node(c.root);
            let case = NewCase {
                case_id: ci as u64,
                policy: world.policies[c.policy].name.as_str(),
                root_type: graph.types[node.ty as usize].as_str(),
                root_key: node.key.canonical(),
                root_kind: node.key.stored_kind(),
                case_clock: *clock,
            };
            digest.update(
                format!(
                    "case\0{ci}\0{}\0{}\0{}\n",
                    case.policy, case.root_type, case.root_key
                )
                .as_bytes(),
            );
            cases.push(case);
        }
        plans::write_cases(tx, id, &cases).await?;
    }
    let deleted_nodes: Vec<usize> = (0..graph.len())
        .filter(|i| eval.case_of[*i] != evaluate::NOT_DELETED)
        .collect();
    for chunk in deleted_nodes.chunks(150) {
        let rows: Vec<NewEntity> = chunk
            .iter()
            .map(|&n| {
                let node = &graph.nodes[n];
                let e = NewEntity {
                    case_id: eval.case_of[n] as u64,
                    entity_type: graph.types[node.ty as usize].as_str(),
                    key: node.key.canonical(),
                    key_kind: node.key.stored_kind(),
                };
                digest.update(
                    format!("entity\0{}\0{}\0{}\n", e.case_id, e.entity_type, e.key).as_bytes(),
                );
                e
            })
            .collect();
        plans::write_entities(tx, id, &rows).await?;
    }
    Ok(())
}

/// The objects the plan deletes or redacts.
pub(super) async fn objects(
    tx: &mut Tx<'_>,
    id: &str,
    to_delete: &[NewObject],
    digest: &mut Sha256,
) -> Result<(), StateError> {
    for o in to_delete {
        digest.update(format!("object\0{}\0{}\0{}\n", o.key, o.fate, o.links).as_bytes());
        if let Some(r) = &o.records {
            digest.update(format!("records\0{r}\n").as_bytes());
        }
    }
    plans::write_objects(tx, id, to_delete).await
}

/// The undatable entities and the dangling references, for review.
pub(super) fn entity_review(graph: &Graph) -> Vec<NewReview> {
    let mut review = Vec::new();
    for n in graph.nodes.iter().filter(|n| n.clock.is_none()) {
        review.push(NewReview {
            kind: "undatable",
            entity_type: Some(graph.types[n.ty as usize].clone()),
            key: n.key.canonical(),
            size: None,
            fate: "undatable".into(),
            reason: None,
            entities: None,
        });
    }
    for (child, key, parent, missing) in &graph.dangling_examples {
        review.push(NewReview {
            kind: "dangling",
            entity_type: Some(graph.types[*child as usize].clone()),
            key: key.canonical(),
            size: None,
            fate: graph.types[*parent as usize].clone(),
            reason: Some(missing.canonical()),
            entities: None,
        });
    }
    review
}

/// The plan's own row, with its summary, brake and digest.
pub(super) async fn plan(tx: &mut Tx<'_>, as_of: i64, s: &PlanSummary) -> Result<(), StateError> {
    plans::write_plan(
        tx,
        NewPlan {
            id: &s.id,
            created_at: &s.created_at,
            as_of,
            config_hash: &s.config_hash,
            digest: &s.digest,
            summary: serde_json::to_string(s).unwrap_or_default(),
            brake: (!s.brake.is_empty())
                .then(|| serde_json::to_string(&s.brake).unwrap_or_default()),
            kind: s.request.is_some().then_some("request"),
        },
    )
    .await
}
