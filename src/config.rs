//! `--config FILE`: the same settings as the command line, in TOML. The command line wins;
//! list settings (`exclude`, `interpreters`) are merged.
//!
//! ```toml
//! optimize = [0, 1]
//! jobs = 4
//! invalidation-mode = "checked-hash"
//! exclude = ["*/tests/*", "/usr/lib/python3.12/test"]
//! errors = "warn"
//! link = true
//! timeout = 300
//! python-versions = ["3.12"]
//! summary-json = "/tmp/pyclink.json"
//! cache = "/var/cache/pyclink"
//! cache-max-size = "2G"
//! predict = true          # false: compile every level (--compile-every-level)
//!
//! [interpreters]
//! "3.12" = "/usr/bin/python3.12"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::settings::{ErrorPolicy, InvalidationMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub buildroot: Option<PathBuf>,
    pub optimize: Option<Vec<i64>>,
    pub jobs: Option<usize>,
    pub interpreters: Option<BTreeMap<String, PathBuf>>,
    pub python_versions: Option<Vec<String>>,
    pub invalidation_mode: Option<InvalidationMode>,
    pub force: Option<bool>,
    /// `false`: compile every level (`--compile-every-level`).
    pub predict: Option<bool>,
    pub exclude: Option<Vec<String>>,
    pub errors: Option<ErrorPolicy>,
    pub link: Option<bool>,
    pub summary_json: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    /// Bytes, or with K/M/G/T: "2G".
    pub cache_max_size: Option<String>,
    /// Seconds.
    pub timeout: Option<f64>,
    pub quiet: Option<bool>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        // toml's message names the line and column and quotes the offending line.
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: ConfigFile = toml::from_str(
            "optimize = [0, 1]\ninvalidation-mode = \"checked-hash\"\nerrors = \"warn\"\n[interpreters]\n\"3.12\" = \"/x\"\n",
        )
        .unwrap();
        assert_eq!(c.optimize, Some(vec![0, 1]));
        assert_eq!(c.invalidation_mode, Some(InvalidationMode::CheckedHash));
        assert_eq!(c.errors, Some(ErrorPolicy::Warn));
        let err = toml::from_str::<ConfigFile>("optimise = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("optimise") && err.contains("line 1"), "{err}");
    }
}
