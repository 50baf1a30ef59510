//! `lethe demo`: builds the sample CRM, technical store and config (the
//! generator is the library's `demo`), then runs the pipeline on it and
//! prints what happened.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::args::{DemoArgs, Format};
use super::{EXIT_OK, EXIT_PARTIAL, out, render};
use crate::crm::sample::first_lead_modified_before;
use crate::demo::{DAY, MARKER, config_text, generate, iso};
use crate::state::{HoldKind, StateStore};

/// Builds the demo folder, runs the pipeline on it, and prints the result.
pub async fn run(args: &DemoArgs, format: Format) -> Result<i32> {
    let dir = &args.dir;
    if dir.exists() {
        let is_demo = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !is_demo && !empty {
            bail!(
                "{} exists and is not an earlier lethe demo; pass --dir with a new folder",
                dir.display()
            );
        }
        if is_demo {
            for name in [
                "crm.db",
                "crm.db-wal",
                "crm.db-shm",
                "lethe-state.db",
                "lethe-state.db-wal",
                "lethe-state.db-shm",
                "lethe-state.db.lock",
                "lethe.toml",
            ] {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir_all(dir.join("technical"));
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `lethe demo`; safe to delete\n")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let mut g = generate(
        &dir.join("crm.db"),
        &dir.join("technical"),
        args.leads,
        args.seed,
        now,
        true,
    )
    .await?;
    let key: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    std::fs::write(dir.join("lethe.toml"), config_text(&key))?;
    let config_path = dir.join("lethe.toml");
    let mut config = crate::config::load(&config_path)?;
    config.file = config_path.clone();

    // A litigation hold on an old lead, to show that holds win.
    let state = StateStore::open(&config).await?;
    let old = first_lead_modified_before(&dir.join("crm.db"), &iso(now - 3 * 365 * DAY)).await?;
    if let Some(id) = old {
        state
            .add_hold(
                HoldKind::Entity,
                &format!("lead:{id}"),
                "demo: litigation hold LH-2026-001",
                "lethe demo",
            )
            .await?;
        g.held_lead = Some(id);
    }
    let generated_in = started.elapsed().as_secs_f64();
    if args.generate_only {
        out(&match format {
            Format::Text => format!("generated {}\n", g.describe(dir, generated_in)),
            _ => serde_json::to_string_pretty(&g)? + "\n",
        });
        return Ok(EXIT_OK);
    }

    let crm = crate::crm::connect(&config).await?;
    let store = crate::store::open(&config)?;
    let indexed = super::run_index(&config, format).await?;
    let plan = super::make_plan(&config, crm.as_ref(), &state, None, format).await?;
    let options = crate::apply::ApplyOptions::default();
    let (applied, verified) = super::run_apply(
        &config,
        crm.as_ref(),
        store.as_ref(),
        &state,
        Some(&plan.id),
        &options,
        format,
    )
    .await?;
    match format {
        Format::Text => {
            out(&format!("demo {}\n\n", g.describe(dir, generated_in)));
            out(&render::index(&indexed));
            out("\n");
            out(&render::plan(&plan, false));
            out("\n");
            out(&render::apply(&applied, verified.as_ref()));
            let cfg = config_path.display();
            out(&format!(
                "\nnext:\n  lethe -c {cfg} explain lead:{}     # why the held lead stays\n  lethe -c {cfg} plan                  # a second plan at the same instant deletes nothing new\n  lethe -c {cfg} audit verify\n",
                g.held_lead.unwrap_or(1)
            ));
        }
        _ => out(&(serde_json::to_string_pretty(&serde_json::json!({
            "generated": g, "index": indexed, "plan": plan, "apply": applied, "verify": verified
        }))? + "\n")),
    }
    Ok(if applied.failed() {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}
