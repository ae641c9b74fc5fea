//! Step 5: what the build log keeps. One line per version, every error as `path:line: message`,
//! and the same figures as JSON for build systems. [`Tally`] collects the outcomes of a run as
//! they come.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::compile::cache::CacheStats;
use crate::compile::pool::Timing;
use crate::compile::source::Outcome;
use crate::escape::plural;
use crate::fsroot::display_in_root;
use crate::plan::{Job, Plan};
use crate::problem::{FileError, Problem, PYCACHE_UNUSABLE};
use crate::python::PyVersion;
use crate::settings::{ErrorPolicy, Settings};
use crate::write::WriteStats;

/// The figures of one version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VersionReport {
    pub version: String,
    pub interpreter: String,
    pub cache_tag: String,
    pub invalidation_mode: String,
    pub sources: u64,
    /// Sources whose pycs were all up to date and left alone.
    pub up_to_date_sources: u64,
    /// pyc names in place after the run (written + hardlinked + copied + up to date).
    pub pyc: u64,
    pub written: u64,
    pub hardlinked: u64,
    pub copied: u64,
    pub up_to_date: u64,
    pub errors: u64,
    /// Level compilations the interpreters did for the pycs written (the rest were predicted
    /// identical and never compiled, or came from the cache).
    pub levels_compiled: u64,
    /// pycs written from `--cache` entries, with no interpreter involved.
    pub levels_from_cache: u64,
    /// Sources deliberately not compiled (symlinks leaving the root).
    pub skipped: u64,
    pub warnings: u64,
    /// Bytes of the pycs this run wrote, counting every name...
    pub bytes_apparent: u64,
    /// ...and counting each inode once.
    pub bytes_stored: u64,
    /// What this version's pycs get because the version table has not validated pyclink's
    /// normal form or level prediction for it (raw interpreter bytes, every level compiled),
    /// and why; `null` for a validated version.
    pub unvalidated: Option<String>,
}

impl VersionReport {
    pub fn add_written(&mut self, s: WriteStats) {
        self.written += s.written;
        self.hardlinked += s.linked;
        self.copied += s.copied;
        self.pyc += s.written + s.linked + s.copied;
        self.bytes_apparent += s.apparent_bytes;
        self.bytes_stored += s.stored_bytes;
    }

    /// The build-log line.
    pub fn line(&self) -> String {
        let up_to_date = if self.up_to_date > 0 {
            format!(", {} up to date", self.up_to_date)
        } else {
            String::new()
        };
        let mut line = format!(
            "pyclink: {}: {}, {} ({} written, {} hardlinked, {} copied{}), {}",
            self.version,
            plural(self.sources, "source"),
            self.pyc_count(),
            self.written,
            self.hardlinked,
            self.copied,
            up_to_date,
            plural(self.errors, "error"),
        );
        if self.skipped > 0 {
            line += &format!(", {} skipped", self.skipped);
        }
        // The sizes are of what this run wrote: "0.0 MiB -> 0.0 MiB" would read as an empty
        // tree.
        if self.written + self.hardlinked + self.copied > 0 {
            line += &format!(
                ", {} -> {}",
                mib(self.bytes_apparent),
                mib(self.bytes_stored)
            );
        }
        if let Some(why) = &self.unvalidated {
            line += &format!("; {why}");
        }
        line
    }

    fn pyc_count(&self) -> String {
        format!("{} pyc", self.pyc)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The name and version of the JSON's layout. The version goes up when a field changes meaning
/// or goes away; new fields may appear within a version.
pub const SCHEMA: &str = "pyclink-summary";
pub const SCHEMA_VERSION: u32 = 1;

/// The whole run, as written by `--summary-json` (README describes every field).
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub schema: &'static str,
    pub schema_version: u32,
    /// Why the run could not proceed (then `exit_code` is 2 and there are no figures).
    pub fatal_error: Option<String>,
    pub buildroot: String,
    pub levels: Vec<u8>,
    pub versions: Vec<VersionReport>,
    /// Every error, kept once: the JSON shows it twice (see [`Errors`]).
    #[serde(flatten)]
    pub errors: Errors,
    /// Every compiler warning as `path:line: Category: message`.
    pub warnings: Vec<String>,
    pub skipped: Vec<String>,
    pub stale_temps_removed: usize,
    pub cache: Option<CacheStats>,
    /// `.py` files outside every tree (a run over the whole root; `null` with PATHs).
    pub outside_trees: Option<crate::discover::outside::Outside>,
    pub exit_code: i32,
}

impl Default for RunReport {
    fn default() -> Self {
        RunReport {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            fatal_error: None,
            buildroot: String::new(),
            levels: Vec::new(),
            versions: Vec::new(),
            errors: Errors::default(),
            warnings: Vec::new(),
            skipped: Vec::new(),
            stale_temps_removed: 0,
            cache: None,
            outside_trees: None,
            exit_code: 0,
        }
    }
}

impl RunReport {
    /// The report of a run that could not proceed.
    pub fn failed(why: &str) -> RunReport {
        RunReport {
            fatal_error: Some(why.to_string()),
            exit_code: 2,
            ..RunReport::default()
        }
    }
}

/// The errors of a run. The JSON has two documented views of them, made here from the one
/// list: `errors`, each as printed (`path:line: message`), and `error_details`, each as
/// `{path, line, kind, message}`.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FileError>);

impl Serialize for Errors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct AsPrinted<'a>(&'a [FileError]);
        impl Serialize for AsPrinted<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(ToString::to_string))
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("errors", &AsPrinted(&self.0))?;
        map.serialize_entry("error_details", &self.0)?;
        map.end()
    }
}

/// What a version's line says about its interpreter.
pub struct VersionInfo {
    pub interpreter: String,
    pub cache_tag: String,
    pub invalidation_mode: &'static str,
    pub unvalidated: Option<String>,
}

/// The outcomes of a run, collected as they come (in completion order).
pub struct Tally {
    run: RunReport,
    versions: BTreeMap<PyVersion, VersionReport>,
    policy: ErrorPolicy,
    /// Directories whose `__pycache__` could not be made or opened (a read-only tree): one log
    /// line each at the end, in path order, rather than one per source in scheduling order.
    unusable_dirs: BTreeMap<String, (String, u64)>,
}

impl Tally {
    /// A tally of `plan`'s jobs, starting with what the walk found (its errors and skipped
    /// entries are taken from the plan).
    pub fn new(
        settings: &Settings,
        plan: &mut Plan,
        stale_temps_removed: usize,
        info: impl Fn(PyVersion) -> Option<VersionInfo>,
    ) -> Tally {
        let mut versions: BTreeMap<PyVersion, VersionReport> = BTreeMap::new();
        for (version, sources) in plan.sources_per_version() {
            let mut r = VersionReport {
                version: version.to_string(),
                sources,
                ..Default::default()
            };
            if let Some(i) = info(version) {
                r.interpreter = i.interpreter;
                r.cache_tag = i.cache_tag;
                r.invalidation_mode = i.invalidation_mode.into();
                r.unvalidated = i.unvalidated;
            }
            versions.insert(version, r);
        }
        for why in &plan.skipped {
            log::warn!("{why}");
        }
        let mut tally = Tally {
            run: RunReport {
                buildroot: crate::escape::path_text(settings.buildroot.as_os_str()).into_owned(),
                levels: settings.levels.iter().collect(),
                stale_temps_removed,
                skipped: std::mem::take(&mut plan.skipped),
                ..Default::default()
            },
            versions,
            policy: settings.errors,
            unusable_dirs: BTreeMap::new(),
        };
        for (version, sources) in std::mem::take(&mut plan.unsupported_sources) {
            tally
                .versions
                .entry(version)
                .or_insert_with(|| VersionReport {
                    version: version.to_string(),
                    ..Default::default()
                })
                .sources += sources;
        }
        for (version, e) in std::mem::take(&mut plan.errors) {
            tally.error(version, e);
        }
        tally
    }

    /// One source's outcome.
    pub fn record(&mut self, job: &Job, outcome: Outcome) {
        log_outcome(job, &outcome);
        let r = self
            .versions
            .entry(job.version)
            .or_insert_with(|| VersionReport {
                version: job.version.to_string(),
                ..Default::default()
            });
        let mut write_error = None;
        match outcome {
            Outcome::UpToDate { pycs } => {
                r.up_to_date += pycs;
                r.up_to_date_sources += 1;
                r.pyc += pycs;
            }
            Outcome::Written {
                stats,
                compiled,
                warnings,
                from_cache,
                error,
            } => {
                r.add_written(stats);
                if from_cache {
                    r.levels_from_cache += stats.written + stats.linked + stats.copied;
                } else {
                    r.levels_compiled += compiled;
                }
                r.warnings += warnings.len() as u64;
                // As compileall shows them: the source has something the next Python may
                // reject (an invalid escape sequence...).
                for w in warnings {
                    log::warn!("{w}");
                    self.run.warnings.push(w.to_string());
                }
                write_error = error;
            }
            Outcome::Skipped(why) => {
                log::warn!("{why}");
                r.skipped += 1;
                self.run.skipped.push(why);
            }
            Outcome::Failed(e) => self.error(job.version, e),
        }
        if let Some(e) = write_error {
            self.error(job.version, e);
        }
    }

    /// Errors appear in the log as they happen, as warnings under `--errors warn`.
    fn error(&mut self, version: PyVersion, e: FileError) {
        match &e.problem {
            Problem::Io { what, source } if *what == PYCACHE_UNUSABLE => {
                // `e.path` is already text (see `display_in_root`): its directory, as text.
                let dir = e.path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                self.unusable_dirs
                    .entry(dir)
                    .or_insert_with(|| (source.to_string(), 0))
                    .1 += 1;
            }
            _ => self.log_error(&e),
        }
        self.versions
            .entry(version)
            .or_insert_with(|| VersionReport {
                version: version.to_string(),
                ..Default::default()
            })
            .errors += 1;
        self.run.errors.0.push(e);
    }

    fn log_error(&self, e: &dyn fmt::Display) {
        if self.policy == ErrorPolicy::Fail {
            log::error!("{e}");
        } else {
            log::warn!("{e}");
        }
    }

    /// The report, with the exit status the error policy gives.
    pub fn finish(
        mut self,
        wall: Duration,
        timing: Timing,
        cache: Option<CacheStats>,
    ) -> RunReport {
        for (dir, (why, sources)) in &self.unusable_dirs {
            self.log_error(&format_args!(
                "{}/__pycache__: cannot create or open it: {why}; {} not compiled",
                dir.trim_end_matches('/'),
                plural(*sources, "source")
            ));
        }
        log_timing(wall, timing);
        if let Some(s) = &cache {
            log_cache(s);
        }
        for r in self.versions.values() {
            log_levels(r);
        }
        self.run.cache = cache;
        self.run.versions = self
            .versions
            .into_values()
            .filter(|r| r.sources > 0 || r.errors > 0)
            .collect();
        let errors: u64 = self.run.versions.iter().map(|r| r.errors).sum();
        self.run.exit_code = i32::from(errors > 0 && self.policy == ErrorPolicy::Fail);
        self.run
    }
}

/// `-vv`: each source's outcome, as it comes.
fn log_outcome(job: &Job, outcome: &Outcome) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let what = match outcome {
        Outcome::UpToDate { pycs } => format!("{pycs} pyc up to date"),
        Outcome::Written {
            stats,
            compiled,
            from_cache,
            ..
        } => format!(
            "{}, {} pyc written, {} hardlinked, {} copied",
            if *from_cache {
                "from the cache".to_string()
            } else {
                plural(*compiled, "level") + " compiled"
            },
            stats.written,
            stats.linked,
            stats.copied
        ),
        Outcome::Skipped(_) => "skipped".to_string(),
        Outcome::Failed(_) => "failed".to_string(),
    };
    log::debug!("{} ({}): {what}", display_in_root(&job.rel), job.version);
}

/// `-v`: how the cache served the run.
fn log_cache(s: &CacheStats) {
    log::info!(
        "cache {}{}: {} hits, {} misses, {} stored, {} bad entries rejected, {} evicted, {} other names left alone, {:.1} MiB kept",
        s.dir,
        if s.read_only { " (read-only)" } else { "" },
        s.hits,
        s.misses,
        s.stored,
        s.rejected,
        s.evicted,
        s.foreign,
        s.bytes_after as f64 / (1 << 20) as f64
    );
}

/// `-v`: how many of a version's levels an interpreter compiled, and how many the source
/// proved identical.
fn log_levels(r: &VersionReport) {
    // Levels from the cache were neither compiled nor predicted in this run.
    let produced = (r.written + r.hardlinked + r.copied).saturating_sub(r.levels_from_cache);
    let cached = if r.levels_from_cache > 0 {
        format!(", {} from the cache", r.levels_from_cache)
    } else {
        String::new()
    };
    if produced > 0 {
        log::info!(
            "{}: compiled {} of {} levels ({:.1}% proved identical from the source and not compiled){cached}",
            r.version,
            r.levels_compiled,
            produced,
            100.0 * (produced - r.levels_compiled.min(produced)) as f64 / produced as f64
        );
    } else if r.levels_from_cache > 0 {
        log::info!(
            "{}: compiled no level, {} from the cache",
            r.version,
            r.levels_from_cache
        );
    }
}

/// `-v`: where the time went, for tuning and for bug reports.
fn log_timing(wall: Duration, t: Timing) {
    let secs = |d: Duration| d.as_secs_f64();
    log::info!(
        "time: {:.2}s wall; {} (one per worker) busy {:.2}s, of which {:.2}s \
         waiting for a worker and {:.2}s in pyclink (reading, checking, writing)",
        secs(wall),
        plural(t.workers as u64, "compile thread"),
        secs(t.busy),
        secs(t.waiting),
        secs(t.busy.saturating_sub(t.waiting))
    );
    if let Some((own, children)) = cpu_times() {
        log::info!("cpu: pyclink {own:.2}s, its workers {children:.2}s (user+sys)");
    }
}

/// CPU seconds (user+sys) of this process and of its waited-for children, from /proc.
fn cpu_times() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let tick = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    // After "pid (comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14.
    Some(((tick(11)? + tick(12)?) / hz, (tick(13)? + tick(14)?) / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_log_line() {
        let mut r = VersionReport {
            version: "python3.12".into(),
            sources: 688,
            ..Default::default()
        };
        r.add_written(WriteStats {
            written: 1212,
            linked: 852,
            copied: 0,
            apparent_bytes: 54_630_000,
            stored_bytes: 38_063_000,
        });
        assert_eq!(
            r.line(),
            "pyclink: python3.12: 688 sources, 2064 pyc (1212 written, 852 hardlinked, 0 copied), 0 errors, 52.1 MiB -> 36.3 MiB"
        );
        r.up_to_date = 3;
        r.pyc += 3;
        r.errors = 1;
        r.sources = 1;
        assert!(r.line().contains(": 1 source, "), "{}", r.line());
        assert!(r.line().contains("0 copied, 3 up to date), 1 error, "));
        // Report item 17: skipped sources are counted; a run that wrote nothing shows no sizes.
        r.skipped = 2;
        assert!(
            r.line().contains(", 1 error, 2 skipped, 52.1 MiB"),
            "{}",
            r.line()
        );
        let rerun = VersionReport {
            version: "python3.12".into(),
            sources: 2,
            up_to_date: 6,
            pyc: 6,
            ..Default::default()
        };
        assert_eq!(
            rerun.line(),
            "pyclink: python3.12: 2 sources, 6 pyc (0 written, 0 hardlinked, 0 copied, 6 up to date), 0 errors"
        );
    }

    /// Each error is kept once and the JSON shows both documented views of it.
    #[test]
    fn errors_in_both_views() {
        let mut report = RunReport::default();
        report.errors.0.push(FileError::new(
            std::path::Path::new("usr/lib/python3.12/bad.py"),
            Some(3),
            Problem::DoesNotCompile {
                exception: "SyntaxError".into(),
                message: "invalid syntax".into(),
            },
        ));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["errors"],
            serde_json::json!(["/usr/lib/python3.12/bad.py:3: SyntaxError: invalid syntax"])
        );
        assert_eq!(
            json["error_details"],
            serde_json::json!([{
                "path": "/usr/lib/python3.12/bad.py",
                "line": 3,
                "kind": "does-not-compile",
                "message": "SyntaxError: invalid syntax",
            }])
        );
        // In the documented order: `errors`, then `error_details`, then `warnings`.
        let text = serde_json::to_string(&report).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(at("errors") < at("error_details") && at("error_details") < at("warnings"));
    }
}
