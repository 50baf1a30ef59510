//! `[schedule]` parsed: a cron pattern (croner) in a time zone, and what a
//! scheduled run does. Parsed here, once; `serve::schedule` runs it.

use std::str::FromStr;

use jiff::Timestamp;

/// What a scheduled run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// index + plan + apply: the plan is carried out at once.
    Sweep,
    /// index + plan: each plan waits for approval (`POST /v1/plans/{id}/apply`).
    Plan,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Sweep => "sweep",
            Mode::Plan => "plan",
        }
    }
}

/// A parsed cron pattern in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub pattern: String,
    pub timezone: String,
    pub mode: Mode,
    cron: croner::Cron,
    tz: jiff02::tz::TimeZone,
}

impl Schedule {
    /// `cron`: five fields (minute hour day-of-month month day-of-week), or
    /// six with seconds first; `timezone`: an IANA name such as
    /// `Europe/Berlin`, or `UTC`.
    pub fn parse(cron: &str, timezone: &str, mode: Mode) -> Result<Schedule, String> {
        let parsed = croner::Cron::from_str(cron.trim()).map_err(|e| {
            format!(
                "`{cron}` is not a cron pattern ({e}); write e.g. \"0 3 * * *\" for 03:00 daily"
            )
        })?;
        let tz = jiff02::tz::TimeZone::get(timezone).map_err(|_| {
            format!("`{timezone}` is not a time zone this machine knows; write an IANA name such as \"Europe/Berlin\" or \"UTC\"")
        })?;
        let s = Schedule {
            pattern: cron.trim().to_string(),
            timezone: timezone.to_string(),
            mode,
            cron: parsed,
            tz,
        };
        // A pattern that never fires (30 February) is a mistake, not a schedule.
        if s.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(format!("`{cron}` never fires"));
        }
        Ok(s)
    }

    fn zoned(&self, t: Timestamp) -> Option<jiff02::Zoned> {
        jiff02::Timestamp::from_second(t.as_second())
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    fn back(z: jiff02::Zoned) -> Option<Timestamp> {
        Timestamp::from_second(z.timestamp().as_second()).ok()
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = self.zoned(t)?;
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .and_then(Self::back)
    }

    /// The last tick at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let z = self.zoned(t)?;
        self.cron
            .find_previous_occurrence(&z, true)
            .ok()
            .and_then(Self::back)
    }

    /// `t` as wall-clock time in the schedule's zone (for display).
    pub fn local(&self, t: Timestamp) -> String {
        self.zoned(t)
            .map(|z| z.strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
            .unwrap_or_else(|| t.to_string())
    }
}
