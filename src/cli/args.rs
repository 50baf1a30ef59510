//! The command line, as clap definitions. `--help` is generated from these
//! doc comments, so they are written to teach.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// lethe: GDPR retention and erasure for CRM data and the technical data
/// behind it.
///
/// The pipeline: `index` links payload files to entities, `plan` decides what
/// is due (a dry run, stored for review), `apply` executes a stored plan,
/// `sweep` does all three. Exit codes: 0 done, 1 failed, 2 bad config or
/// usage, 3 finished with some items failed (each named).
#[derive(Debug, Parser)]
#[command(name = "lethe", version, max_term_width = 100)]
pub struct Cli {
    /// The config file; relative paths in it resolve against its folder.
    #[arg(
        short,
        long,
        global = true,
        default_value = "lethe.toml",
        env = "LETHE_CONFIG"
    )]
    pub config: PathBuf,

    /// Output format: text for people, json for scripts (one JSON document on
    /// stdout). `audit export` also takes jsonl and csv.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Jsonl,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a sample CRM, technical store and config, then plan and apply.
    ///
    /// Writes DIR/crm.db (SQLite), DIR/technical/ (JSON, XML, CSV payloads),
    /// DIR/lethe.toml (commented) and DIR/lethe-state.db, then runs index,
    /// plan, apply and verify and prints the report. Afterwards try
    /// `lethe -c DIR/lethe.toml explain lead:1`.
    Demo(DemoArgs),
    /// Validate the config, then reach every store it names.
    Check(CheckArgs),
    /// List the technical store and (re)build the link index; incremental.
    Index,
    /// Dry run: decide what goes and what stays, and why; store the plan.
    ///
    /// Nothing is deleted. The plan is stored with an id for `lethe apply`.
    /// `lethe plan show` prints a stored plan for review, `lethe plan
    /// prune` removes old ones, `lethe plan --list` lists them.
    #[command(args_conflicts_with_subcommands = true)]
    Plan(PlanArgs),
    /// Execute a stored plan (default: the latest).
    ///
    /// Each case is re-checked inside the deleting transaction: a case that
    /// gained a contract, a hold or new activity since the plan is skipped
    /// and reported. Applying a finished plan again does nothing.
    ///
    /// With the state in PostgreSQL, start several `lethe apply` (on one
    /// machine or many) to share the plan: each claims batches, and takes
    /// over the batches of a worker silent for `[apply] worker_timeout`.
    Apply(ApplyArgs),
    /// index + plan + apply + verify: the scheduled job.
    Sweep(SweepArgs),
    /// Why an entity is kept, or when it becomes due.
    Explain(ExplainArgs),
    /// Legal holds: on an entity (`lead:4711`), an object (`object:KEY`) or
    /// every object under a prefix (`prefix:inbound/4711/`).
    #[command(subcommand)]
    Hold(HoldCommand),
    /// The audit log: verify the chain, export it, look an entity up.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The report for the data protection officer: deleted, kept and why,
    /// bytes freed, failures, the audit chain head, the 12-month outlook.
    Report(ReportArgs),
    /// Prove an applied plan: every item it deleted is gone, and no
    /// identifier of a deleted entity is left anywhere in the store.
    ///
    /// Asks the CRM and the store for each deleted item again, then reads
    /// every object of the store (any format, any fate, streamed) and looks
    /// for the e-mail addresses and phone numbers of the deleted entities
    /// (`identifiers`), which lethe holds only as keyed hashes. Each object
    /// that still names one is listed by pseudonym with why it was left
    /// (held, shared, unlinked, unreadable, changed). Exit 3 when an item
    /// remains or an object that is not held still names a deleted entity.
    /// `apply` and `sweep` run this after every apply.
    Verify(VerifyArgs),
    /// Subject requests: erase a person's data on request (Art. 17), send
    /// them a copy (Art. 15, 20), and track each request's deadline.
    ///
    /// A subject is `--subject email=ADDRESS`, `--subject phone=NUMBER`
    /// (matched, normalised, on the `identifiers` columns of every entity
    /// type) or an entity ref (`--subject lead:4711`); give several to name
    /// one person by all of them. lethe stores only keyed hashes of the
    /// identifiers you type and never prints them back.
    #[command(subcommand)]
    Request(RequestCommand),
    /// The suppression list: the identifiers of every person lethe erased,
    /// kept as keyed hashes, so that a re-import is noticed.
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// The service: the schedule, the HTTP API and the metrics.
    ///
    /// Runs `[schedule]` (cron, timezone, mode = sweep | plan) and serves the
    /// API described at /openapi.json: link registration at ingest time,
    /// explain, holds, plans (approve and apply by digest), runs, audit,
    /// /metrics for Prometheus, /healthz and /readyz. Every endpoint but the
    /// last two needs a bearer token from `[[serve.token]]`. SIGTERM or
    /// SIGINT stops it; an apply in progress finishes its batch in flight and
    /// is resumed at the next start.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: [serve] listen, else 127.0.0.1:8080);
    /// port 0 picks a free port, printed on stdout.
    #[arg(long)]
    pub listen: Option<String>,
    /// Log lines on stderr: text for people, json for a log collector.
    /// RUST_LOG filters them (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The plan; default: the latest.
    pub plan_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The plan; default: the latest.
    pub plan_id: Option<String>,
    /// Write one self-contained HTML page (no network) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to build the demo (created; must be empty or an earlier demo).
    #[arg(long, default_value = "lethe-demo")]
    pub dir: PathBuf,
    /// How many leads to generate.
    #[arg(long, default_value_t = 3000)]
    pub leads: u64,
    /// Seed of the generator, for reproducible demos.
    #[arg(long, default_value_t = 4711)]
    pub seed: u64,
    /// Only generate the CRM, payloads and config; do not index, plan or
    /// apply (the benchmarks start from here).
    #[arg(long)]
    pub generate_only: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only validate the file; do not reach the CRM, store or state.
    #[arg(long)]
    pub no_environment: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The evaluation instant: RFC 3339 (2026-06-30T00:00:00Z) or a date
    /// (2026-06-30, midnight UTC). Default: now. Every age in the plan is
    /// measured at this instant.
    #[arg(long, value_parser = parse_as_of)]
    pub as_of: Option<jiff::Timestamp>,
    /// List the stored plans instead of making one.
    #[arg(long)]
    pub list: bool,
    /// Plan even though the link index was never built, is older than the
    /// last plan's, or is empty while the store is not (every payload of a
    /// deleted entity would then stay, unlinked).
    #[arg(long)]
    pub allow_unindexed: bool,
    #[command(subcommand)]
    pub action: Option<PlanCommand>,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// A stored plan, for review before `lethe apply` (default: the latest).
    ///
    /// Without --items: the header (id, as-of, status, digest, brake
    /// reasons, counts per policy, dangling relations). With --items: every
    /// case (its root and the entities inside it) and every object the plan
    /// deletes, with its status. Keys are shown as pseudonyms unless --keys.
    Show(PlanShowArgs),
    /// Delete stored plans and their items, except the newest N or those
    /// younger than a duration.
    ///
    /// A plan being applied, or started and not finished (items still
    /// planned or executing), is kept and named. The audit log is not
    /// touched: its chain stays whole, and `lethe audit verify` checks the
    /// records of pruned plans by chain only.
    Prune(PlanPruneArgs),
}

#[derive(Debug, Args)]
pub struct PlanShowArgs {
    /// The plan; default: the latest.
    pub plan_id: Option<String>,
    /// List the cases and objects, not only the header.
    #[arg(long)]
    pub items: bool,
    /// Print entity refs and object keys as they are (they can be personal
    /// data); default: their pseudonyms, as in the audit log.
    #[arg(long)]
    pub keys: bool,
    /// Only items of this fate. Deleted: delete (cases, and the objects of
    /// deleted entities), orphan (objects linked to no entity the CRM has),
    /// redact (shared objects rewritten without the deleted entities'
    /// records). Kept: shared (also serves a retained entity, and cannot be
    /// redacted: the reason says why), orphan-young (within
    /// technical.orphans.retain), unlinked (no rule matched), unreadable
    /// (with the reason), held; and the entities the plan could not date
    /// (undatable) or whose parent column names no entity (dangling). For
    /// review: reimported (a CRM entity carrying an identifier of a person
    /// lethe erased) and, in a subject request's plan, names-subject (an
    /// object that names the subject but links none of its entities).
    #[arg(long, value_parser = ["delete", "orphan", "redact", "shared", "orphan-young", "unlinked", "unreadable", "held", "undatable", "dangling", "reimported", "names-subject"])]
    pub fate: Option<String>,
    /// Only items of this policy (`orphans` for orphaned objects).
    #[arg(long)]
    pub policy: Option<String>,
    /// Only cases holding an entity of this type (and only those entities),
    /// or `object` for only the objects.
    #[arg(long = "type", value_name = "TYPE")]
    pub entity_type: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PlanPruneArgs {
    /// Keep the newest N plans (at least 1: `lethe apply` takes the latest).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// Keep the plans made within this duration ("90 days", "6 months").
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan to apply; default: the latest.
    pub plan_id: Option<String>,
    /// Apply even though the plan trips the mass-delete brake.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Wait for another running apply instead of refusing.
    #[arg(long)]
    pub wait: bool,
    /// Cases per CRM transaction (default: apply.batch_cases, 1000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The evaluation instant (see `plan --as-of`); default now.
    #[arg(long, value_parser = parse_as_of)]
    pub as_of: Option<jiff::Timestamp>,
    /// Apply even though the plan trips the mass-delete brake.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Wait for another running apply instead of refusing.
    #[arg(long)]
    pub wait: bool,
    /// Cases per CRM transaction (default: apply.batch_cases, 1000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The entity, as type:key (e.g. lead:4711).
    pub entity: String,
    /// The evaluation instant (see `plan --as-of`); default now.
    #[arg(long, value_parser = parse_as_of)]
    pub as_of: Option<jiff::Timestamp>,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Put a hold on an entity, object or prefix.
    ///
    /// Recorded in the audit log (`hold-add`: the target's pseudonym, the
    /// reason's length, the author). Texts are one line each, without
    /// control characters: TARGET at most 1024 bytes, --reason at most 2000
    /// characters, --author at most 200.
    Add {
        /// lead:4711, object:KEY or prefix:PATH/ (at most 1024 bytes)
        target: String,
        /// Why: a case number, not personal data (at most 2000 characters).
        #[arg(long)]
        reason: String,
        /// Who (at most 200 characters); default $USER, and without either
        /// the hold is refused.
        #[arg(long)]
        author: Option<String>,
        /// Hold an entity the CRM does not have (yet): without this, a ref
        /// that names no row is refused, since its hold would protect nothing.
        #[arg(long)]
        allow_absent: bool,
    },
    /// Lift a hold; recorded in the audit log (`hold-rm`).
    Rm {
        /// As given to `hold add`.
        target: String,
        /// Who (at most 200 characters); default $USER, and without either
        /// the hold stays.
        #[arg(long)]
        author: Option<String>,
    },
    /// List the holds.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and compare the journal with the audit log,
    /// item by item.
    ///
    /// Every item the journal says lethe deleted must have exactly one
    /// delete record with its pseudonym and plan, and every delete record
    /// such an item; mismatches are named by pseudonym. Exit 1 when anything
    /// disagrees.
    Verify {
        /// The chain's head as kept elsewhere (the `head` this command or
        /// `lethe report` printed, or SEQ:HASH): the chain must end there.
        #[arg(long, value_name = "HEAD")]
        expect_head: Option<String>,
    },
    /// Every record, one per line (`--format jsonl` or `--format csv`).
    Export,
    /// The records of one entity (`lead:4711`) or object (`object:KEY`).
    Lookup { target: String },
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Plan the erasure of a subject's data (Art. 17), for review.
    ///
    /// Finds every entity whose identifiers match (and their descendants),
    /// judges each as a sweep would but with no retention period: what a
    /// `keep_if` or a hold keeps stays, listed with its reason (a contract's
    /// commercial retention, Art. 17(3)(b)); the rest is planned for
    /// deletion with its payload files, and shared files lose only the
    /// subject's records. Then searches the whole store for files that name
    /// the subject without a link to its entities (listed for review, never
    /// deleted automatically). Prints the plan; `lethe apply PLAN_ID`
    /// executes it with the same re-check, journal, audit and verify as a
    /// sweep, and marks the request done.
    Erase(RequestArgs),
    /// Write a subject's data to a zip (Art. 15 access, Art. 20 portability).
    ///
    /// manifest.json, entities/TYPE.json (every column of the subject's
    /// entities and their descendants), files/ (payloads as stored; from
    /// shared files only the subject's records, with the CSV header or the
    /// JSON/XML envelope) and index.html (a readable summary). This is the
    /// one output of lethe that holds personal data: hand it to the subject
    /// and delete it. The audit records that it was made.
    Export(RequestExportArgs),
    /// The requests, newest first: received, due (received + 1 month), days
    /// left, status; overdue ones flagged.
    List,
    /// One request: its subject (by pseudonym), plan, status and audit.
    Show {
        /// The request's id (`R-…`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Who: email=ADDRESS, phone=NUMBER or an entity ref (lead:4711);
    /// repeat to give several.
    #[arg(long = "subject", value_name = "KIND=VALUE|REF", required = true)]
    pub subject: Vec<String>,
    /// The ticket or letter the request came with (stored and shown; not
    /// the subject's data).
    #[arg(long)]
    pub reference: String,
    /// The day the request was received (YYYY-MM-DD); default today. The
    /// answer is due a month later.
    #[arg(long, value_parser = parse_date)]
    pub received: Option<jiff::civil::Date>,
}

#[derive(Debug, Args)]
pub struct RequestExportArgs {
    #[command(flatten)]
    pub request: RequestArgs,
    /// The zip to write (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// Is this person erased? Answers per identifier, in order, never
    /// printing the value: `{"results": [{"kind": "email", "suppressed":
    /// true}]}` with --format json.
    Check {
        #[arg(long = "subject", value_name = "KIND=VALUE", required = true)]
        subject: Vec<String>,
    },
    /// Lift an identifier from the list (renewed consent); audited
    /// (`suppression-rm`).
    Rm {
        #[arg(long = "subject", value_name = "KIND=VALUE", required = true)]
        subject: Vec<String>,
        /// Why: a case number, not personal data (at most 2000 characters).
        #[arg(long)]
        reason: String,
        /// Who (at most 200 characters); default $USER.
        #[arg(long)]
        author: Option<String>,
    },
}

fn parse_date(s: &str) -> Result<jiff::civil::Date, String> {
    s.trim()
        .parse::<jiff::civil::Date>()
        .map_err(|_| format!("`{s}` is not a date; write YYYY-MM-DD"))
}

fn parse_as_of(s: &str) -> Result<jiff::Timestamp, String> {
    crate::model::parse_as_of(s)
}
