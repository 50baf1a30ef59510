//! The service's Prometheus metrics (`GET /metrics`), through the `metrics`
//! facade and its Prometheus exporter. Labels are bounded: policy names,
//! kept reasons and entity types come from the config, outcomes and failure
//! kinds from fixed lists. No key, pseudonym or payload value is a label.

use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::apply::ApplyReport;
use crate::plan::PlanSummary;
use crate::verify::VerifyReport;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls share it. `None`
/// when another recorder was installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|_| {
                describe();
                handle
            })
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "lethe_cases_due",
        "Cases due for deletion in the latest plan, per policy"
    );
    describe_gauge!(
        "lethe_cases_kept",
        "Cases kept in the latest plan, per policy and reason"
    );
    describe_gauge!(
        "lethe_objects_planned",
        "Objects the latest plan deletes, per fate (linked, orphan)"
    );
    describe_counter!(
        "lethe_entities_deleted_total",
        "CRM entities deleted, per type"
    );
    describe_counter!("lethe_objects_deleted_total", "Technical objects deleted");
    describe_counter!(
        "lethe_objects_redacted_total",
        "Shared technical objects rewritten without the records of deleted entities"
    );
    describe_counter!(
        "lethe_records_redacted_total",
        "Records of deleted entities removed from shared objects"
    );
    describe_gauge!(
        "lethe_residual_objects",
        "Objects of the store that the last verify found still naming a deleted entity"
    );
    describe_counter!(
        "lethe_bytes_freed_total",
        "Bytes of technical objects deleted"
    );
    describe_counter!(
        "lethe_failures_total",
        "Failures, per kind: case, object (items failed in an apply) and run (a run that failed as a whole)"
    );
    describe_counter!("lethe_runs_total", "Runs, per mode and outcome");
    describe_gauge!(
        "lethe_last_sweep_timestamp_seconds",
        "When the last run finished (Unix time)"
    );
    describe_gauge!(
        "lethe_last_sweep_duration_seconds",
        "How long the last run took"
    );
    describe_gauge!(
        "lethe_next_run_timestamp_seconds",
        "The next scheduled run (Unix time; 0 when none)"
    );
    describe_counter!(
        "lethe_links_registered_total",
        "Links registered through the API (new ones)"
    );
    describe_counter!(
        "lethe_http_requests_total",
        "HTTP requests, per route and status class"
    );
    describe_gauge!(
        "lethe_requests_overdue",
        "Subject requests past their due date (received + 1 month) and not done"
    );
    describe_gauge!("lethe_requests_open", "Subject requests not done yet");
    describe_gauge!(
        "lethe_reimported_entities",
        "CRM entities that carry an identifier of a person lethe erased, in the latest plan"
    );
    describe_gauge!(
        "lethe_reimported_objects",
        "Objects the latest index run read that name an identifier of a person lethe erased"
    );
}

/// Subject requests: overdue and open, as of now.
pub fn requests(overdue: u64, open: u64) {
    gauge!("lethe_requests_overdue").set(overdue as f64);
    gauge!("lethe_requests_open").set(open as f64);
}

/// After an index run: the objects it read that name an erased person.
pub fn index(s: &crate::index::IndexSummary) {
    gauge!("lethe_reimported_objects").set(s.reimported as f64);
}

/// After a plan: what is due and kept, per policy and reason.
pub fn plan(s: &PlanSummary) {
    for p in &s.policies {
        gauge!("lethe_cases_due", "policy" => p.name.clone()).set(p.due as f64);
        for (reason, n) in &p.kept {
            gauge!("lethe_cases_kept", "policy" => p.name.clone(), "reason" => reason.clone())
                .set(*n as f64);
        }
    }
    gauge!("lethe_objects_planned", "fate" => "linked").set(s.objects.delete as f64);
    gauge!("lethe_objects_planned", "fate" => "orphan").set(s.objects.orphan_delete as f64);
    if s.request.is_none() {
        gauge!("lethe_reimported_entities").set(s.reimported as f64);
    }
}

/// After an apply: what was deleted and what failed.
pub fn apply(r: &ApplyReport) {
    for (ty, n) in &r.entities_deleted {
        counter!("lethe_entities_deleted_total", "type" => ty.clone()).increment(*n);
    }
    counter!("lethe_objects_deleted_total").increment(r.objects_deleted);
    counter!("lethe_bytes_freed_total").increment(r.bytes_freed);
    counter!("lethe_failures_total", "kind" => "case").increment(r.cases_failed);
    counter!("lethe_failures_total", "kind" => "object").increment(r.objects_failed);
    counter!("lethe_objects_redacted_total").increment(r.objects_redacted);
    counter!("lethe_records_redacted_total").increment(r.records_removed);
}

/// After a verify: the objects of the store that still name a deleted
/// entity (not held), and the held ones.
pub fn verify(v: &VerifyReport) {
    let failing = v.residual_failing();
    gauge!("lethe_residual_objects", "held" => "false").set(failing as f64);
    gauge!("lethe_residual_objects", "held" => "true")
        .set((v.residual.len() as u64 - failing) as f64);
}

/// After any run.
pub fn run_finished(mode: &'static str, outcome: &'static str, seconds: f64) {
    counter!("lethe_runs_total", "mode" => mode, "outcome" => outcome).increment(1);
    if outcome == "failed" {
        counter!("lethe_failures_total", "kind" => "run").increment(1);
    }
    gauge!("lethe_last_sweep_timestamp_seconds").set(jiff::Timestamp::now().as_second() as f64);
    gauge!("lethe_last_sweep_duration_seconds").set(seconds);
}

pub fn next_run(t: Option<jiff::Timestamp>) {
    gauge!("lethe_next_run_timestamp_seconds").set(t.map(|t| t.as_second() as f64).unwrap_or(0.0));
}

pub fn links_registered(n: u64) {
    counter!("lethe_links_registered_total").increment(n);
}

pub fn http_request(route: &str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("lethe_http_requests_total", "route" => route.to_string(), "status" => class)
        .increment(1);
}
