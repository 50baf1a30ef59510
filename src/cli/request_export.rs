//! `lethe request export`: the subject's access export, written to a zip.

use anyhow::Result;

use super::args::{Format, RequestExportArgs};
use super::usage;
use crate::config::Config;
use crate::state::StateStore;

pub(super) async fn export(
    _config: &Config,
    _state: &StateStore,
    _a: RequestExportArgs,
    _format: Format,
) -> Result<i32> {
    Err(usage("export", "not built yet".into()))
}
