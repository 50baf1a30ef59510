//! The residual scanner over a folder, for benches/residual.sh: builds a
//! `Scanner` from identifier values (hashed as the apply would store
//! them), scans every file under DIR (warm: the script reads them first),
//! and prints the time, the throughput and the values found.
//!
//!   residual IDS DIR [--threads N] [--repeat N] [--found FILE] [--lengths]
//!
//! IDS: one identifier a line, `email<TAB>value` or `phone<TAB>value`.
//! `--found FILE`: the values found (as written in IDS), sorted, one a line.
//! `--lengths`: tell the scanner the lengths of the values (`only_lengths`).
//! Prints one line of `key=value` pairs; times are the best of `--repeat`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lethe::sensitive::Sensitive;
use lethe::verify::residual::{Fingerprint, IdentifierKind, ScanStats, Scanner, normalise};

fn main() {
    if let Err(e) = run() {
        eprintln!("residual bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut ids, mut dir) = (None, None);
    let (mut threads, mut repeat, mut found_out, mut lengths) = (1usize, 1usize, None, false);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--threads" => {
                threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--repeat" => {
                repeat = value("--repeat")?
                    .parse()
                    .map_err(|e| format!("--repeat: {e}"))?
            }
            "--found" => found_out = Some(PathBuf::from(value("--found")?)),
            "--lengths" => lengths = true,
            _ if ids.is_none() => ids = Some(PathBuf::from(a)),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    let (Some(ids), Some(dir)) = (ids, dir) else {
        return Err("usage: residual IDS DIR [--threads N] [--repeat N] [--found FILE]".into());
    };

    let text = std::fs::read_to_string(&ids).map_err(|e| format!("{}: {e}", ids.display()))?;
    let fingerprint = Fingerprint::new(&Sensitive::new(b"bench-key-0123456789".to_vec()));
    let mut values = Vec::new();
    let mut erased = Vec::new();
    let mut unsearchable = 0;
    let mut seen: [BTreeSet<usize>; 2] = Default::default();
    let built = Instant::now();
    for line in text.lines() {
        let Some((kind, value)) = line.split_once('\t') else {
            return Err(format!("{}: a line without a tab", ids.display()));
        };
        let kind: IdentifierKind = kind.parse().map_err(|e| format!("{e}"))?;
        match normalise(kind, value) {
            Some(n) => {
                seen[(kind == IdentifierKind::Phone) as usize].insert(n.len());
                erased.push((kind, fingerprint.hash(kind, &n), values.len() as u32));
                values.push(value.to_owned());
            }
            None => unsearchable += 1,
        }
    }
    let mut scanner = Scanner::new(fingerprint, erased);
    if lengths {
        let [emails, phones] = seen;
        scanner = scanner
            .only_lengths(IdentifierKind::Email, emails)
            .only_lengths(IdentifierKind::Phone, phones);
    }
    let build_s = built.elapsed().as_secs_f64();

    let mut files = Vec::new();
    walk(&dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    files.sort();

    let mut best: Option<(f64, f64)> = None;
    let mut stats = ScanStats::default();
    let mut found = BTreeSet::new();
    for _ in 0..repeat.max(1) {
        let next = AtomicUsize::new(0);
        let total = Mutex::new((ScanStats::default(), BTreeSet::new()));
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    let mut mine = ScanStats::default();
                    let mut hits = BTreeSet::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break };
                        match File::open(path).and_then(|f| {
                            scanner.scan(f, &mut |e| {
                                hits.insert(e);
                            })
                        }) {
                            Ok(st) => mine += st,
                            Err(e) => eprintln!("{}: {e}", path.display()),
                        }
                    }
                    let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
                    t.0 += mine;
                    t.1.extend(hits);
                });
            }
        });
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        if best.is_none_or(|(w, _)| wall < w) {
            best = Some((wall, cpu));
        }
        (stats, found) = total.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    let (wall, cpu) = best.unwrap_or_default();
    if let Some(path) = found_out {
        let mut names: Vec<&str> = found.iter().map(|&e| values[e as usize].as_str()).collect();
        names.sort_unstable();
        let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for n in names {
            writeln!(f, "{n}").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!(
        "identifiers={} unsearchable={unsearchable} lengths={lengths} build_s={build_s:.3} files={} bytes={} threads={threads} \
         wall_s={wall:.3} cpu_s={cpu:.2} gb_per_s={:.2} gb_per_cpu_s={:.2} candidates={} hashed={} found={}",
        values.len(),
        files.len(),
        stats.bytes,
        stats.bytes as f64 / wall / 1e9,
        stats.bytes as f64 / cpu.max(0.01) / 1e9,
        stats.candidates,
        stats.hashed,
        found.len(),
    );
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// User and system time of this process, all threads (Linux: /proc).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
