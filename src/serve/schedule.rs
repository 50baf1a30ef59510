//! The loop that runs a job at each tick of `[schedule]` (the parsed
//! schedule is `config::schedule`). Runs never overlap (the loop awaits each run); a failed
//! run is the job's to log and count, and the next tick comes as usual; a
//! tick missed while the service was down is run once at start (catch-up).
//!
//! Time comes from a [`Clock`], so a test runs a year of ticks in
//! milliseconds with a clock that jumps to each deadline.

use async_trait::async_trait;
use jiff::Timestamp;

pub use crate::config::schedule::{Mode, Schedule};

/// Where the scheduler gets the time.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Returns at `t` (or later).
    async fn sleep_until(&self, t: Timestamp);
}

/// The machine's clock. Sleeps in steps of at most a minute, so that a
/// clock set forward (or a suspended VM) does not delay a tick for long.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, t: Timestamp) {
        loop {
            let left = t.duration_since(Timestamp::now());
            if left <= jiff::SignedDuration::ZERO {
                return;
            }
            let step = std::time::Duration::try_from(left)
                .unwrap_or_default()
                .min(std::time::Duration::from_secs(60));
            tokio::time::sleep(step).await;
        }
    }
}

/// A clock that jumps to each deadline at once: a year of schedule runs in
/// milliseconds (tests, and trying a pattern out).
pub struct JumpClock(std::sync::Mutex<Timestamp>);

impl JumpClock {
    pub fn starting_at(t: Timestamp) -> JumpClock {
        JumpClock(std::sync::Mutex::new(t))
    }
}

#[async_trait]
impl Clock for JumpClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }

    async fn sleep_until(&self, t: Timestamp) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t > *now {
            *now = t;
        }
    }
}

/// Why a run was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A tick of the schedule.
    Schedule,
    /// The latest tick, missed while the service was down, run once at start.
    CatchUp,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
        }
    }
}

/// What the scheduler runs, and where it keeps the last tick it ran.
#[async_trait]
pub trait Job: Send + Sync {
    /// Runs for `tick`; the job logs and counts a failure itself.
    async fn run(&self, tick: Timestamp, trigger: Trigger) -> Result<(), String>;
    /// The last tick run (or deliberately passed over), persisted.
    async fn last_tick(&self) -> Option<Timestamp>;
    async fn set_last_tick(&self, tick: Timestamp);
    /// The next tick, for display (`GET /v1/schedule`).
    fn set_next(&self, next: Option<Timestamp>);
}

/// What a scheduler loop did, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    pub runs: u64,
    pub failures: u64,
    pub catch_ups: u64,
}

/// Runs `job` at every tick until `stop` turns true, or (for tests) until
/// the next tick would be after `until`.
pub async fn run(
    schedule: &Schedule,
    clock: &dyn Clock,
    job: &dyn Job,
    mut stop: tokio::sync::watch::Receiver<bool>,
    until: Option<Timestamp>,
) -> Ran {
    let mut ran = Ran::default();
    let now = clock.now();
    let latest = schedule.latest_at_or_before(now);
    match (job.last_tick().await, latest) {
        // A tick passed while we were down: run it once, however many passed.
        (Some(last), Some(latest)) if latest > last => {
            tracing::info!(tick = %latest, "catching up a run missed while the service was down");
            ran.catch_ups += 1;
            ran.runs += 1;
            if job.run(latest, Trigger::CatchUp).await.is_err() {
                ran.failures += 1;
            }
            job.set_last_tick(latest).await;
        }
        // First start: nothing was owed before now.
        (None, Some(latest)) => job.set_last_tick(latest).await,
        _ => {}
    }
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(next) = schedule.next_after(clock.now()) else {
            job.set_next(None);
            break;
        };
        if until.is_some_and(|u| next > u) {
            break;
        }
        job.set_next(Some(next));
        tokio::select! {
            _ = clock.sleep_until(next) => {}
            _ = stop.changed() => break,
        }
        ran.runs += 1;
        if job.run(next, Trigger::Schedule).await.is_err() {
            ran.failures += 1;
        }
        job.set_last_tick(next).await;
    }
    job.set_next(None);
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        ticks: Mutex<Vec<(Timestamp, Trigger)>>,
        last: Mutex<Option<Timestamp>>,
        next: Mutex<Option<Timestamp>>,
        /// Fail the runs whose index is in here.
        fail: Vec<usize>,
    }

    #[async_trait]
    impl Job for Recorder {
        async fn run(&self, tick: Timestamp, trigger: Trigger) -> Result<(), String> {
            let mut t = self.ticks.lock().unwrap();
            t.push((tick, trigger));
            if self.fail.contains(&(t.len() - 1)) {
                Err("injected".into())
            } else {
                Ok(())
            }
        }
        async fn last_tick(&self) -> Option<Timestamp> {
            *self.last.lock().unwrap()
        }
        async fn set_last_tick(&self, tick: Timestamp) {
            *self.last.lock().unwrap() = Some(tick);
        }
        fn set_next(&self, next: Option<Timestamp>) {
            *self.next.lock().unwrap() = next;
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_year_of_daily_runs_at_three_in_berlin() {
        let schedule = Schedule::parse("0 3 * * *", "Europe/Berlin", Mode::Sweep).unwrap();
        let clock = JumpClock::starting_at(ts("2026-12-31T23:00:00Z")); // 00:00 in Berlin
        let job = Recorder {
            fail: vec![10, 11, 200],
            ..Default::default()
        };
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let ran = run(
            &schedule,
            &clock,
            &job,
            rx,
            Some(ts("2027-12-31T22:59:59Z")),
        )
        .await;
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ticks = job.ticks.lock().unwrap();
        // 2027 has 365 days; 03:00 exists on each (Berlin's switches are at 02:00/03:00).
        assert_eq!(ticks.len(), 365);
        assert_eq!(
            ran,
            Ran {
                runs: 365,
                failures: 3,
                catch_ups: 0
            }
        );
        assert!(ticks.iter().all(|(_, t)| *t == Trigger::Schedule));
        assert!(ticks.windows(2).all(|w| w[0].0 < w[1].0));
        for (t, _) in ticks.iter() {
            assert!(
                schedule.local(*t).contains(" 03:00:00 "),
                "{}",
                schedule.local(*t)
            );
        }
        // Winter: 03:00 CET = 02:00 UTC; summer: 03:00 CEST = 01:00 UTC.
        assert_eq!(ticks[0].0, ts("2027-01-01T02:00:00Z"));
        assert!(ticks.iter().any(|(t, _)| *t == ts("2027-07-01T01:00:00Z")));
        // The runs after the failed ones came as usual.
        assert_eq!(ticks[12].0, ts("2027-01-13T02:00:00Z"));
        assert_eq!(*job.last.lock().unwrap(), Some(ts("2027-12-31T02:00:00Z")));
    }

    #[tokio::test]
    async fn a_missed_run_is_caught_up_once_at_start() {
        let schedule = Schedule::parse("0 3 * * *", "UTC", Mode::Sweep).unwrap();
        // Down for three days: three ticks missed, one catch-up run.
        let clock = JumpClock::starting_at(ts("2027-03-04T12:00:00Z"));
        let job = Recorder::default();
        *job.last.lock().unwrap() = Some(ts("2027-03-01T03:00:00Z"));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let ran = run(
            &schedule,
            &clock,
            &job,
            rx,
            Some(ts("2027-03-06T12:00:00Z")),
        )
        .await;
        let ticks = job.ticks.lock().unwrap();
        assert_eq!(
            *ticks,
            vec![
                (ts("2027-03-04T03:00:00Z"), Trigger::CatchUp),
                (ts("2027-03-05T03:00:00Z"), Trigger::Schedule),
                (ts("2027-03-06T03:00:00Z"), Trigger::Schedule),
            ]
        );
        assert_eq!(ran.catch_ups, 1);
    }

    #[tokio::test]
    async fn no_catch_up_when_nothing_was_missed_or_on_first_start() {
        let schedule = Schedule::parse("0 3 * * *", "UTC", Mode::Plan).unwrap();
        for last in [Some(ts("2027-03-04T03:00:00Z")), None] {
            let clock = JumpClock::starting_at(ts("2027-03-04T12:00:00Z"));
            let job = Recorder::default();
            *job.last.lock().unwrap() = last;
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let ran = run(
                &schedule,
                &clock,
                &job,
                rx,
                Some(ts("2027-03-05T12:00:00Z")),
            )
            .await;
            assert_eq!(ran.catch_ups, 0);
            assert_eq!(
                *job.ticks.lock().unwrap(),
                vec![(ts("2027-03-05T03:00:00Z"), Trigger::Schedule)]
            );
        }
    }

    #[tokio::test]
    async fn stop_ends_the_loop_and_the_next_run_is_visible() {
        let schedule = Schedule::parse("*/5 * * * *", "UTC", Mode::Sweep).unwrap();
        let clock = SystemClock;
        let job = std::sync::Arc::new(Recorder::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let j = job.clone();
        let s = schedule.clone();
        let task = tokio::spawn(async move { run(&s, &SystemClock, j.as_ref(), rx, None).await });
        // The loop publishes the next tick, then waits for it.
        let mut next = None;
        for _ in 0..100 {
            next = *job.next.lock().unwrap();
            if next.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let next = next.expect("the next run is published");
        assert_eq!(Some(next), schedule.next_after(clock.now()));
        tx.send(true).unwrap();
        let ran = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .unwrap();
        assert_eq!(ran.runs, 0);
        assert_eq!(*job.next.lock().unwrap(), None);
    }

    #[test]
    fn bad_patterns_and_zones_say_what_to_write() {
        let e = Schedule::parse("0 3 * *", "UTC", Mode::Sweep).unwrap_err();
        assert!(e.contains("not a cron pattern"), "{e}");
        let e = Schedule::parse("0 3 * * *", "Europe/Atlantis", Mode::Sweep).unwrap_err();
        assert!(e.contains("IANA"), "{e}");
        let e = Schedule::parse("0 3 30 2 *", "UTC", Mode::Sweep).unwrap_err();
        assert!(e.contains("never fires") || e.contains("not a cron"), "{e}");
    }
}
