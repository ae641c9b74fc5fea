//! pyclink: byte-compile the Python trees of a build root at optimization levels 0, 1 and 2
//! with the real interpreters, hardlinking the levels whose pycs are identical.
//!
//! The modules follow the pipeline, one per step: [`discover`] (trees, versions, interpreters)
//! → [`plan`] (the sources) → [`compile`] (a pool of [`worker`]s) → [`write`] (atomic write
//! and link) → [`report`]. [`python`] holds the vocabulary (versions, levels, the pyc format,
//! the level scan), [`problem`] what can go wrong with a source (produced by the stages,
//! collected by the report: it sits below every stage, so no stage depends on the report),
//! [`fsroot`] keeps every file access inside the build root, [`walk`] is the one walk of its
//! trees (from the disk, or from a walk already made), and [`cli`] turns
//! the command line and config file into [`settings::Settings`]. [`verify`] checks pycs
//! already written (`pyclink verify`).

pub mod cleanup;
pub mod cli;
pub(crate) mod compile;
pub(crate) mod config;
pub(crate) mod discover;
mod error;
pub mod escape;
pub mod fsroot;
pub mod generate;
#[cfg(test)]
mod layers;
pub mod normalize;
pub(crate) mod plan;
pub mod problem;
pub mod python;
pub mod report;
pub mod settings;
pub mod verify;
pub mod walk;
pub(crate) mod worker;
pub(crate) mod write;

use std::collections::BTreeMap;
use std::time::Instant;

pub use error::Error;

use crate::compile::cache::Cache;
use crate::compile::pool::{self, Compiler, Schedule};
use crate::compile::source::{Options, Target};
use crate::discover::interpreter::{self, Interpreter};
use crate::fsroot::Root;
use crate::python::levels::invalidation_mode_for;
use crate::python::PyVersion;
use crate::report::{RunReport, Tally, VersionInfo};
use crate::settings::Settings;

/// What the first stages found: the root, its sources, and a compiler for each version.
struct Prepared {
    root: Root,
    plan: plan::Plan,
    compilers: BTreeMap<PyVersion, Compiler>,
    /// Sources outside every tree, for a run over the whole root (no PATHs).
    outside: Option<discover::outside::Outside>,
}

/// Discover the trees and versions, plan the sources, and find an interpreter for every version
/// that has sources. Nothing is written.
fn prepare(settings: &Settings) -> Result<Prepared, Error> {
    let root = Root::open(&settings.buildroot)?;

    // 1. Discover the trees and the version each is compiled for. An interpreter asked its
    // version there is the one then chosen for it (see `Starter`).
    let starter = interpreter::Starter::new(worker::SCRIPT, settings.timeout);
    let found = discover::discover(
        walk::Walker::Disk(&root),
        discover::Asked {
            paths: &settings.paths,
            python_versions: &settings.python_versions,
            interpreters: &settings.interpreters,
            unversioned_interpreters: &settings.unversioned_interpreters,
            starter: &starter,
        },
    )?;
    // 1a. A run over the whole root says what it leaves without pycs; one restricted to PATHs
    // was told what to compile.
    let outside = settings.paths.is_empty().then(|| {
        let trees: Vec<&std::path::Path> = found
            .trees
            .iter()
            .chain(&found.unsupported)
            .map(|t| t.dir.as_path())
            .collect();
        let outside = discover::outside::scan(&root, &trees);
        if let Some(warning) = outside.warning() {
            log::warn!("{warning}");
        }
        outside
    });
    // 2. Plan: every tree's sources, version by version, largest first.
    let excludes = plan::Excludes::in_root(&settings.excludes, Some(&settings.buildroot))?;
    let plan = plan::plan(
        walk::Walker::Disk(&root),
        &found.trees,
        &found.unsupported,
        &excludes,
    );
    excludes.warn_unused();
    // 1b. An interpreter for every version that has sources.
    let unreadable = plan.errors.iter().map(|(v, _)| *v).collect();
    let interpreters = interpreter::select_all(
        &plan.sources_per_version(),
        &unreadable,
        &found.interpreters,
        &root,
        &starter,
    )
    .map_err(discover::Error::NoInterpreter)?;
    let compilers = compilers(interpreters, settings)?;
    Ok(Prepared {
        root,
        plan,
        compilers,
        outside,
    })
}

/// `--dry-run`: what a run would compile, version by version, as lines for the user.
/// Sources whose pycs are all up to date are marked so, by the run's own freshness check (which
/// only reads).
pub fn list(settings: &Settings) -> Result<String, Error> {
    let Prepared {
        root,
        plan,
        compilers,
        ..
    } = prepare(settings)?;
    let levels: Vec<String> = settings.levels.iter().map(|l| l.to_string()).collect();
    let opts = Options {
        levels: settings.levels,
        predict: false,
        link: settings.link,
        force: settings.force,
    };
    let mut out = String::new();
    for (version, sources) in plan.sources_per_version() {
        let jobs: Vec<(&plan::Job, bool)> = plan
            .jobs
            .iter()
            .filter(|j| j.version == version)
            .map(|job| {
                let fresh = compilers.get(&version).is_some_and(|c| {
                    matches!(
                        compile::source::prepare(&root, job, &c.target, opts),
                        compile::source::Step::Done(compile::source::Outcome::UpToDate { .. })
                    )
                });
                (job, fresh)
            })
            .collect();
        if let Some(c) = compilers.get(&version) {
            let fresh = jobs.iter().filter(|(_, fresh)| *fresh).count() as u64;
            let fresh = match fresh {
                0 => String::new(),
                n => format!(" ({n} up to date)"),
            };
            out += &format!(
                "{version}: {}{fresh} with {} (cache tag {}, {} pycs, levels {})\n",
                escape::plural(sources, "source"),
                escape::shown(&c.launch.program),
                c.target.format.cache_tag,
                c.target.invalidation.name(),
                levels.join(" ")
            );
        }
        for (job, fresh) in jobs {
            let mark = if fresh { " (up to date)" } else { "" };
            out += &format!(
                "  {}{mark}\n",
                escape::printable(&fsroot::display_in_root(&job.rel))
            );
        }
    }
    for why in &plan.skipped {
        out += &format!("skipped: {}\n", escape::printable(why));
    }
    for (_, e) in &plan.errors {
        out += &format!("error: {}\n", escape::printable(&e.to_string()));
    }
    Ok(out)
}

/// Run pyclink once. Per-file problems are in the report (and its exit code); an `Err` is a
/// problem with the run itself (no such root, no interpreter, bad option).
pub fn run(settings: &Settings) -> Result<RunReport, Error> {
    let started = Instant::now();
    let Prepared {
        root,
        mut plan,
        compilers,
        outside,
    } = prepare(settings)?;
    let stale_temps = write::remove_stale_temps(&root, &plan.pycache_dirs);

    // 3-4. Compile, write and link, tallying every outcome as it comes.
    let cache = match &settings.cache {
        Some(dir) => Cache::open(
            dir,
            compile::cache::Options {
                max_bytes: settings.cache_max_size,
                shared: settings.cache_shared,
                read_only: settings.cache_read_only,
            },
        )
        .map_err(|source| Error::Cache {
            dir: dir.clone(),
            source,
        })?,
        None => None,
    };
    let mut tally = Tally::new(settings, &mut plan, stale_temps, |v| {
        compilers.get(&v).map(|c| VersionInfo {
            interpreter: escape::path_text(c.launch.program.as_os_str()).into_owned(),
            cache_tag: c.target.format.cache_tag.clone(),
            invalidation_mode: c.target.invalidation.name(),
            unvalidated: c.target.unvalidated.clone(),
        })
    });
    let schedule = Schedule {
        opts: Options {
            levels: settings.levels,
            predict: settings.predict,
            link: settings.link,
            force: settings.force,
        },
        workers: settings.jobs,
        timeout: settings.timeout,
        cache: cache.as_ref(),
    };
    let timing = pool::run(&root, &plan.jobs, &compilers, schedule, |job, outcome| {
        tally.record(job, outcome)
    });

    // 5. Report.
    let mut report = tally.finish(started.elapsed(), timing, cache.map(|c| c.trim()));
    report.outside_trees = outside;
    Ok(report)
}

/// A compiler per version: its interpreter, and what its pycs look like.
fn compilers(
    interpreters: BTreeMap<PyVersion, Interpreter>,
    settings: &Settings,
) -> Result<BTreeMap<PyVersion, Compiler>, Error> {
    let mut compilers = BTreeMap::new();
    for (version, interpreter) in interpreters {
        let hello = &interpreter.first_worker.hello;
        let format = hello.format.clone();
        let invalidation =
            invalidation_mode_for(settings.invalidation_mode, version, format.supports_hash())
                .map_err(|mode| Error::NoHashBasedPycs { version, mode })?;
        let identity = compile::cache::interpreter_identity(hello, &interpreter.launch);
        let policy = python::table::policy(version, format.magic);
        let target = Target::new(format, invalidation, identity, &policy, settings.normalize);
        compilers.insert(version, Compiler::new(interpreter, target));
    }
    Ok(compilers)
}
