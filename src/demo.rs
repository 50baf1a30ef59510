//! The sample behind `lethe demo` and the benchmarks (`generate`): a SQLite
//! CRM with leads over four years, opportunities, quotes and contracts (the
//! values drawn here, the rows written by `crm::sample`, which owns their
//! statements and `SCHEMA`); a technical folder of JSON, UBL XML and CSV
//! payloads shaped like real integration traffic; a commented config
//! (`config_text`). The command itself, which runs the pipeline on it, is
//! `cli/demo.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::crm::sample::{Contract, Lead, Opportunity, Quote, SampleWriter};

pub const DAY: i64 = 86_400;
/// The file that marks a folder as made by `lethe demo` (safe to rebuild).
pub const MARKER: &str = ".lethe-demo";

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elif", "Farid", "Greta", "Hannes", "Ines", "Jonas", "Katrin",
    "Lukas",
];
const LAST: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Koch",
];
const COMPANY: &[&str] = &[
    "Nordwind GmbH",
    "Edge Communications",
    "Burlington Textiles",
    "Rheinblick AG",
    "Pyramid Construction",
    "Grand Hotels",
];

/// What the generator made, for the demo's summary and the benchmarks.
#[derive(Debug, Default, serde::Serialize)]
pub struct Generated {
    pub leads: u64,
    pub opportunities: u64,
    pub quotes: u64,
    pub contracts: u64,
    pub files: u64,
    pub bytes: u64,
    /// An old lead put on hold by the demo.
    pub held_lead: Option<i64>,
}

impl Generated {
    /// One line: what was generated where, and how long it took.
    pub fn describe(&self, dir: &Path, seconds: f64) -> String {
        format!(
            "in {}: {} leads, {} opportunities, {} quotes, {} contracts; {} payload files ({}) in {seconds:.1}s",
            dir.display(),
            self.leads,
            self.opportunities,
            self.quotes,
            self.contracts,
            self.files,
            crate::report::bytes(self.bytes)
        )
    }
}

pub fn iso(t: i64) -> String {
    crate::model::format_instant(t)
}

fn set_mtime(path: &Path, t: i64) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64));
    }
}

struct Writer {
    root: PathBuf,
    files: u64,
    bytes: u64,
    payloads: bool,
}

impl Writer {
    fn put(&mut self, key: &str, content: &str, mtime: i64) -> Result<()> {
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        set_mtime(&path, mtime);
        self.files += 1;
        self.bytes += content.len() as u64;
        Ok(())
    }
}

/// Generates `leads` leads (about 2.5 entities each with children) ending
/// at `now`, into `crm_path` and `technical`. `files_per_lead` payloads are
/// written when `payloads` is true.
pub async fn generate(
    crm_path: &Path,
    technical: &Path,
    leads: u64,
    seed: u64,
    now: i64,
    payloads: bool,
) -> Result<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut crm = SampleWriter::create(crm_path).await?;
    std::fs::create_dir_all(technical)?;
    let mut w = Writer {
        root: technical.to_path_buf(),
        files: 0,
        bytes: 0,
        payloads,
    };
    let mut g = Generated::default();
    let span = 4 * 365 * DAY;
    let mut monthly: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let (mut opp_id, mut quote_id, mut contract_id) = (0i64, 0i64, 0i64);
    for id in 1..=leads as i64 {
        let created = now - rng.random_range(0..span);
        let modified = (created + rng.random_range(0..90 * DAY)).min(now);
        let undatable = rng.random_bool(0.01);
        let (first, last, company) = (
            FIRST[rng.random_range(0..FIRST.len())],
            LAST[rng.random_range(0..LAST.len())],
            COMPANY[rng.random_range(0..COMPANY.len())],
        );
        let email = format!("{}.{}{}@example.com", first.to_lowercase(), id, last.len());
        // Unique per lead (7919 is prime to 10^7), so that one lead's
        // erasure never finds another's number; the draw keeps the sequence.
        let _ = rng.random_range(0..10_000_000);
        let phone = format!("+49 30 {:07}", (id * 7919).rem_euclid(10_000_000));
        crm.lead(&Lead {
            id,
            first_name: first,
            last_name: last,
            email: &email,
            phone: &phone,
            company,
            status: if undatable { "imported" } else { "open" },
            created_at: (!undatable).then(|| iso(created)),
            modified_at: (!undatable).then(|| iso(modified)),
        })
        .await?;
        g.leads += 1;
        if w.payloads {
            let json = format!(
                "{{\n  \"attributes\": {{ \"type\": \"Lead\", \"referenceId\": \"LeadRef{id}\" }},\n  \"lead\": {{ \"id\": {id} }},\n  \"FirstName\": \"{first}\",\n  \"LastName\": \"{last}\",\n  \"Email\": \"{email}\",\n  \"Phone\": \"{phone}\",\n  \"Company\": \"{company}\",\n  \"LeadSource\": \"Web\"\n}}\n"
            );
            w.put(&format!("inbound/{id}/lead.json"), &json, created)?;
            let month = crate::model::format_instant(created)[..7].to_string();
            monthly.entry(month).or_default().push(format!(
                "{id};{first};{last};{email};\"{company}\";{}",
                iso(created)
            ));
        }
        let n_opps = match rng.random_range(0..10) {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        for _ in 0..n_opps {
            opp_id += 1;
            let om = (modified + rng.random_range(0..120 * DAY)).min(now);
            let stage = match rng.random_range(0..10) {
                0..=3 => "lost",
                4..=5 => "open",
                _ => "won",
            };
            crm.opportunity(&Opportunity {
                id: opp_id,
                lead_id: id,
                name: &format!("{company} deal"),
                stage,
                amount: rng.random_range(1_000.0..90_000.0f64).round(),
                modified_at: iso(om),
            })
            .await?;
            g.opportunities += 1;
            let n_quotes = if stage == "won" {
                1
            } else {
                rng.random_range(0..2)
            };
            for _ in 0..n_quotes {
                quote_id += 1;
                let qm = (om + rng.random_range(0..30 * DAY)).min(now);
                let total = rng.random_range(1_000.0..90_000.0f64).round();
                crm.quote(&Quote {
                    id: quote_id,
                    opportunity_id: opp_id,
                    total,
                    modified_at: iso(qm),
                })
                .await?;
                g.quotes += 1;
                if w.payloads {
                    let year = &iso(qm)[..4];
                    let xml = format!(
                        r#"<?xml version="1.0" encoding="UTF-8"?>
<Quotation xmlns="urn:oasis:names:specification:ubl:schema:xsd:Quotation-2"
    xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
    xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
  <cbc:UBLVersionID>2.1</cbc:UBLVersionID>
  <cbc:ID>{quote_id}</cbc:ID>
  <cbc:IssueDate>{date}</cbc:IssueDate>
  <cac:BuyerCustomerParty>
    <cac:Party>
      <cac:PartyName><cbc:Name>{company}</cbc:Name></cac:PartyName>
      <cac:Contact><cbc:Name>{first} {last}</cbc:Name><cbc:ElectronicMail>{email}</cbc:ElectronicMail></cac:Contact>
    </cac:Party>
  </cac:BuyerCustomerParty>
  <cac:QuotedMonetaryTotal><cbc:PayableAmount currencyID="EUR">{total:.2}</cbc:PayableAmount></cac:QuotedMonetaryTotal>
</Quotation>
"#,
                        date = &iso(qm)[..10]
                    );
                    w.put(&format!("quotes/{year}/quote-{quote_id}.xml"), &xml, qm)?;
                }
                if stage == "won" {
                    contract_id += 1;
                    crm.contract(&Contract {
                        id: contract_id,
                        quote_id,
                        signed_at: iso(qm),
                        modified_at: iso(qm),
                    })
                    .await?;
                    g.contracts += 1;
                }
            }
        }
        if id % 10_000 == 0 {
            crm = crm.checkpoint().await?;
        }
    }
    crm.finish().await?;
    if w.payloads {
        // Monthly exports, `;`-separated as German CRMs write them: one file
        // links many leads, so some are shared between deleted and kept ones.
        for (month, rows) in &monthly {
            let mut csv =
                String::from("\u{feff}LeadId;FirstName;LastName;Email;Company;CreatedAt\r\n");
            for r in rows {
                csv.push_str(r);
                csv.push_str("\r\n");
            }
            let t = crate::model::parse_clock_text(&format!("{month}-28")).unwrap_or(now);
            w.put(&format!("exports/leads-{month}.csv"), &csv, t.min(now))?;
        }
        // Orphans: payloads of leads deleted from the CRM by hand long ago,
        // and a few recent ones still within technical.orphans.retain.
        for i in 0..(leads / 60).max(3) {
            let id = leads as i64 + 1000 + i as i64;
            let t = if i % 8 == 0 {
                now - 2 * DAY
            } else {
                now - rng.random_range(40 * DAY..span)
            };
            w.put(
                &format!("inbound/{id}/lead.json"),
                &format!("{{ \"attributes\": {{ \"type\": \"Lead\" }}, \"lead\": {{ \"id\": {id} }}, \"Email\": \"gone{id}@example.com\" }}\n"),
                t,
            )?;
        }
        // Unlinked and unreadable files: reported, never deleted.
        w.put(
            "misc/field-mapping.txt",
            "LeadId -> leads.id\n",
            now - 400 * DAY,
        )?;
        w.put(
            "misc/README.md",
            "Integration drop folder.\n",
            now - 900 * DAY,
        )?;
        w.put(
            "quotes/2019/quote-truncated.xml",
            "<Quotation><cbc:ID>17</cbc:ID>",
            now - 900 * DAY,
        )?;
    }
    g.files = w.files;
    g.bytes = w.bytes;
    Ok(g)
}

pub fn config_text(audit_key: &str) -> String {
    format!(
        r#"# lethe demo configuration. Every key is documented in lethe.reference.toml.

[crm]
url = "sqlite://crm.db"                 # relative to this file's folder

[crm.entities.lead]
table = "leads"
key = "id"
clock = ["modified_at", "created_at"]   # first non-null wins; none → undatable, kept
subject = ["email", "phone", "first_name", "last_name"]
identifiers = ["email", "phone"]        # kept as keyed hashes at erasure; verify searches the store for them

[crm.entities.opportunity]
table = "opportunities"
key = "id"
clock = "modified_at"
parent = {{ lead = "lead_id" }}

[crm.entities.quote]
table = "quotes"
key = "id"
clock = "modified_at"
parent = {{ opportunity = "opportunity_id" }}

[crm.entities.contract]
table = "contracts"
key = "id"
clock = "modified_at"
parent = {{ quote = "quote_id" }}

[technical]
url = "technical"

[[technical.link]]                      # by path: the folder name is the lead's key
path = "inbound/{{lead}}/**"

[[technical.link]]                      # UBL quotations: the quote's key is /Quotation/ID
glob = "quotes/**/*.xml"
xml = "/Quotation/ID"
entity = "quote"

[[technical.link]]                      # monthly exports: one link per row
glob = "exports/*.csv"
csv = "LeadId"
entity = "lead"

[technical.orphans]
retain = "30 days"

[safety]
# The demo's first sweep clears four years of backlog at once; a running
# installation keeps the default 0.5 and is stopped by the brake when a plan
# would delete more than half of any type.
max_delete_fraction = 0.9

[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = ["contract"]
basis = "GDPR Art. 5(1)(e), Art. 17(1)(a)"

[[policy]]
name = "lost-opportunities"
root = "opportunity"
retain = "12 months"
keep_if = ["contract", {{ entity = "opportunity", where = "stage = 'open'" }}]
basis = "GDPR Art. 5(1)(e), Art. 17(1)(a)"

[state]
url = "sqlite://lethe-state.db"

[audit]
# In production: key = "${{LETHE_AUDIT_KEY}}". The demo writes its own.
key = "{audit_key}"
"#
    )
}
