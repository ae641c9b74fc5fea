//! pyclink: byte-compile the Python trees of a build root at optimization levels 0, 1 and 2
//! with the real interpreters, hardlinking the levels whose pycs are identical.
//!
//! The modules follow the pipeline: [`discover`] → [`plan`] → [`compile`] (with [`pool`] and
//! [`worker`]) → [`write`] → [`report`].

pub mod cache;
pub mod cleanup;
pub mod cli;
pub mod compile;
pub mod config;
pub mod discover;
pub mod fsroot;
pub mod interpreter;
pub mod marshal;
pub mod plan;
pub mod pool;
pub mod predict;
pub mod provenance;
pub mod pyc;
pub mod report;
pub mod settings;
pub mod version;
pub mod worker;
pub mod write;

use anyhow::{bail, Context, Result};

use crate::compile::{Options, Outcome, Target};
use crate::fsroot::Root;
use crate::report::{RunReport, VersionReport};
use crate::settings::{ErrorPolicy, InvalidationMode, Settings};
use crate::version::PyVersion;

/// Run pyclink once. Per-file problems are in the report (and its exit code); an `Err` is a
/// problem with the run itself (no such root, no interpreter, bad option).
pub fn run(settings: &Settings) -> Result<RunReport> {
    let root = Root::open(&settings.buildroot).with_context(|| {
        format!(
            "cannot open the build root {}",
            settings.buildroot.display()
        )
    })?;

    // 1. Discover. `--interpreter PATH` names a version by being one.
    let mut interpreters = settings.interpreters.clone();
    let mut python_versions = settings.python_versions.clone();
    for path in &settings.unversioned_interpreters {
        let version = interpreter::version_of(path, settings.timeout)
            .map_err(|e| anyhow::anyhow!("--interpreter {}: {e}", path.display()))?;
        if let Some(other) = interpreters.get(&version).filter(|p| *p != path) {
            bail!(
                "two interpreters given for {version}: {} and {}",
                other.display(),
                path.display()
            );
        }
        interpreters.insert(version, path.clone());
        python_versions.push(version);
    }
    let found = discover::find_trees(&root, &settings.paths).map_err(anyhow::Error::msg)?;
    for s in &found.skipped {
        log::warn!("{s}");
    }
    let unversioned_targets = if found.unversioned.is_empty() {
        Vec::new()
    } else {
        let given: Vec<PyVersion> = interpreters.keys().copied().collect();
        let (targets, why) = discover::unversioned_targets(
            &python_versions,
            &given,
            &found.versions_in_root,
            || interpreter::host_python3(settings.timeout),
        )
        .map_err(anyhow::Error::msg)?;
        let names: Vec<String> = targets.iter().map(|v| v.to_string()).collect();
        log::info!(
            "{} compiled for {} ({why})",
            found
                .unversioned
                .iter()
                .map(|p| fsroot::display_in_root(p))
                .collect::<Vec<_>>()
                .join(", "),
            names.join(", ")
        );
        targets
    };
    let trees = discover::expand(&found, &unversioned_targets);
    let versions: Vec<PyVersion> = trees
        .iter()
        .map(|t| t.version)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let indexed: Vec<(usize, &discover::Tree)> = trees
        .iter()
        .map(|t| {
            (
                versions
                    .iter()
                    .position(|v| *v == t.version)
                    .expect("listed"),
                t,
            )
        })
        .collect();

    // 2. Plan.
    let excludes = plan::Excludes::new(&settings.excludes).map_err(anyhow::Error::msg)?;
    let plan = plan::plan(&root, &indexed, &excludes);
    for s in &plan.skipped {
        log::warn!("{s}");
    }
    if plan.stale_temps_removed > 0 {
        log::info!(
            "removed {} temp file(s) left by an interrupted run",
            plan.stale_temps_removed
        );
    }
    if trees.is_empty() {
        log::warn!("no Python trees found in {}", root.path().display());
    }

    // Interpreters, only for versions that have sources.
    let mut sources = vec![0u64; versions.len()];
    for j in &plan.jobs {
        sources[j.version] += 1;
    }
    let mut lanes = Vec::new();
    let mut reports: Vec<VersionReport> = Vec::new();
    let mut missing = Vec::new();
    for (i, &version) in versions.iter().enumerate() {
        let mut report = VersionReport {
            version: version.to_string(),
            sources: sources[i],
            ..Default::default()
        };
        if sources[i] == 0 {
            lanes.push(None);
            reports.push(report);
            continue;
        }
        let given = interpreters.get(&version).map(|p| p.as_path());
        match interpreter::select(version, &root, given, settings.timeout) {
            Ok(interp) => {
                let format = interp.first_worker.hello.format.clone();
                let mode =
                    resolve_mode(settings.invalidation_mode, version, format.supports_hash())?;
                report.interpreter = format!(
                    "{} ({})",
                    interp.first_worker.hello.executable, interp.origin
                );
                report.cache_tag = format.cache_tag.clone();
                report.invalidation_mode = mode.name().into();
                let identity =
                    cache::interpreter_identity(&interp.first_worker.hello, &interp.launch);
                lanes.push(Some(pool::Lane::new(
                    interp.launch,
                    Target {
                        format,
                        mode,
                        identity,
                    },
                    interp.first_worker,
                )));
            }
            Err(why) => {
                missing.push(format!("{why} (needed for {} source(s))", sources[i]));
                lanes.push(None);
            }
        }
        reports.push(report);
    }
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }

    // 3-4. Compile, write and link.
    let opts = Options {
        levels: settings.levels,
        predict: settings.predict,
        link: settings.link,
        force: settings.force,
    };
    let mut run = RunReport {
        buildroot: root.path().display().to_string(),
        levels: settings.levels.iter().collect(),
        stale_temps_removed: plan.stale_temps_removed,
        skipped: plan.skipped.clone(),
        ..Default::default()
    };
    let fail = settings.errors == ErrorPolicy::Fail;
    let record_error =
        |run: &mut RunReport, reports: &mut Vec<VersionReport>, v: usize, e: report::FileError| {
            if fail {
                log::error!("{e}");
            } else {
                log::warn!("{e}");
            }
            reports[v].errors += 1;
            run.errors.push(e.to_string());
            run.error_details.push(e);
        };
    for (v, e) in plan.errors.iter().cloned() {
        record_error(&mut run, &mut reports, v, e);
    }
    let cache = match &settings.cache {
        Some(dir) => Some(
            cache::Cache::open(dir, settings.cache_max_size)
                .with_context(|| format!("cannot use the cache directory {}", dir.display()))?,
        ),
        None => None,
    };
    let started = std::time::Instant::now();
    let schedule = pool::Schedule {
        opts,
        workers: settings.jobs,
        timeout: settings.timeout,
        cache: cache.as_ref(),
    };
    let timing = pool::run(&root, &plan.jobs, &lanes, schedule, |job, outcome| {
        let r = &mut reports[job.version];
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
            } => {
                r.add_written(stats);
                r.levels_compiled += compiled;
                r.warnings += warnings.len() as u64;
                // As compileall shows them: the source has something the next Python may
                // reject (an invalid escape sequence...).
                for w in warnings {
                    log::warn!("{w}");
                    run.warnings.push(w.to_string());
                }
            }
            Outcome::Skipped(why) => {
                log::warn!("{why}");
                r.skipped += 1;
                run.skipped.push(why);
            }
            Outcome::Failed(e) => record_error(&mut run, &mut reports, job.version, e),
        }
    });

    log_timing(started.elapsed(), timing);
    if let Some(cache) = &cache {
        let s = cache.trim();
        log::info!(
            "cache {}: {} hits, {} misses, {} stored, {} corrupt entries dropped, {} evicted, {:.1} MiB kept",
            s.dir,
            s.hits,
            s.misses,
            s.stored,
            s.rejected,
            s.evicted,
            s.bytes_after as f64 / (1 << 20) as f64
        );
        run.cache = Some(s);
    }
    for r in &reports {
        let produced = r.written + r.hardlinked + r.copied;
        if produced > 0 {
            log::info!(
                "{}: compiled {} of {} levels ({:.1}% proved identical from the source and not compiled)",
                r.version,
                r.levels_compiled,
                produced,
                100.0 * (produced - r.levels_compiled.min(produced)) as f64 / produced as f64
            );
        }
    }

    // 5. Report.
    run.versions = reports
        .into_iter()
        .filter(|r| r.sources > 0 || r.errors > 0)
        .collect();
    let errors: u64 = run.versions.iter().map(|r| r.errors).sum();
    run.exit_code = if errors > 0 && settings.errors == ErrorPolicy::Fail {
        1
    } else {
        0
    };
    Ok(run)
}

/// The invalidation mode for one version: as asked, else as py_compile would pick. Python 3.6
/// has no hash-based pycs: an explicit request is an error, the SOURCE_DATE_EPOCH default
/// quietly stays with timestamps there.
fn resolve_mode(
    asked: Option<InvalidationMode>,
    version: PyVersion,
    hash_ok: bool,
) -> Result<InvalidationMode> {
    let mode = asked.unwrap_or_else(InvalidationMode::default_from_env);
    if mode == InvalidationMode::Timestamp || hash_ok {
        return Ok(mode);
    }
    if asked.is_some() {
        bail!("{version} cannot read {} pycs (PEP 552 came with Python 3.7); use --invalidation-mode timestamp", mode.name());
    }
    log::info!("{version}: no hash-based pycs before Python 3.7; using timestamps despite SOURCE_DATE_EPOCH");
    Ok(InvalidationMode::Timestamp)
}

/// `-v`: where the time went, for tuning and for bug reports.
fn log_timing(wall: std::time::Duration, t: pool::Timing) {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    log::info!(
        "time: {:.2}s wall; {} compile threads (one per worker) busy {:.2}s, of which {:.2}s \
         waiting for a worker and {:.2}s in pyclink (reading, checking, writing)",
        secs(wall),
        t.workers,
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
