//! What `pyclink verify` found: the problems (each `path: kind: what is wrong`), the figures,
//! the summary line and the JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::escape::plural;

/// The name and version of the JSON's layout. The version goes up when a field changes meaning
/// or goes away; new fields and new problem kinds may appear within a version.
pub const SCHEMA: &str = "pyclink-verify";
pub const SCHEMA_VERSION: u32 = 1;

/// What is wrong with a file. The order is the order problems are printed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A level the source must have (`-o`, or by default the root's levels) has no pyc, and
    /// the source compiles.
    Missing,
    /// A pyc of another Python than the one that imports from its tree: a cache tag (or the
    /// magic number of a sourceless pyc) of another version, or a Python 2 pyc in a Python 3
    /// tree. No reader of the tree loads it.
    WrongVersion,
    /// Not the interpreter's magic number, or flags PEP 552 does not define.
    BadHeader,
    /// The data after the header is not one object as marshal writes it: bytes after it (which
    /// `marshal.loads` ignores), an unknown type code, a reference to nothing, a bad size.
    BadMarshal,
    /// The header's timestamp or source hash does not match the source.
    Stale,
    /// The code is not what a fresh compile of the source at the pyc's level gives.
    CodeMismatch,
    /// Some code object's `co_filename` is not the path inside the root.
    WrongFilename,
    /// Identical levels of one source that are separate files.
    MissedLink,
    /// Levels of one source that are one file but whose code differs.
    WrongLink,
    /// A file in `__pycache__` that is not a pyc of a source there, or a pyc that import never
    /// reads (beside its source).
    Stray,
    /// A pyc outside `__pycache__` without a source (unless `--allow-sourceless`).
    Sourceless,
    /// A truncated pyc, or a temp file an interrupted writer left.
    Partial,
    /// A cache tag or magic number that names no Python, or one with no interpreter here.
    UnknownTag,
    /// A file or directory that cannot be read.
    Unreadable,
    /// The checker could not check it (the interpreter crashed or hung on it, twice).
    CheckFailed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::WrongVersion => "wrong-version",
            Kind::BadHeader => "bad-header",
            Kind::BadMarshal => "bad-marshal",
            Kind::Stale => "stale",
            Kind::CodeMismatch => "code-mismatch",
            Kind::WrongFilename => "wrong-filename",
            Kind::MissedLink => "missed-link",
            Kind::WrongLink => "wrong-link",
            Kind::Stray => "stray",
            Kind::Sourceless => "sourceless",
            Kind::Partial => "partial",
            Kind::UnknownTag => "unknown-tag",
            Kind::Unreadable => "unreadable",
            Kind::CheckFailed => "check-failed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem: the file as the installed system sees it (`/usr/...`), and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(kind: Kind, path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.kind, self.message)
    }
}

/// One interpreter's share of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VersionReport {
    pub version: String,
    pub interpreter: String,
    pub cache_tag: String,
    /// The magic number, as hex.
    pub magic: String,
    /// pycs of this version looked at.
    pub pycs: u64,
    /// Sources compiled to check them.
    pub sources: u64,
    /// Sources that do not compile, as `path:line: Type: message` (not problems: they have
    /// no pyc to check, unless one is there anyway, which is a code-mismatch).
    pub do_not_compile: Vec<String>,
}

/// The whole run, as `--summary-json` writes it (README describes the fields).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub schema_version: u32,
    /// Why the run could not proceed (then `exit_code` is 2 and there are no figures).
    pub fatal_error: Option<String>,
    pub buildroot: String,
    /// The PATHs the run was restricted to (as seen inside the root); empty: the whole root.
    pub paths: Vec<String>,
    /// The levels every source must have: `-o`'s, or by default level 0 and every level some
    /// pyc checked has.
    pub required_levels: Vec<u8>,
    /// Every pyc looked at (Python 2 ones excepted, see `not_checked`).
    pub pycs_checked: u64,
    pub problem_count: u64,
    /// Problems per kind (only kinds that occur).
    pub counts: BTreeMap<&'static str, u64>,
    pub versions: Vec<VersionReport>,
    /// Every problem, in the printed order.
    pub problems: Vec<Problem>,
    /// Files deliberately left alone, with why (Python 2 pycs).
    pub not_checked: Vec<String>,
    pub elapsed_seconds: f64,
    pub exit_code: i32,
}

impl Report {
    pub fn new(buildroot: String) -> Report {
        Report {
            schema: SCHEMA,
            schema_version: SCHEMA_VERSION,
            fatal_error: None,
            buildroot,
            paths: Vec::new(),
            required_levels: Vec::new(),
            pycs_checked: 0,
            problem_count: 0,
            counts: BTreeMap::new(),
            versions: Vec::new(),
            problems: Vec::new(),
            not_checked: Vec::new(),
            elapsed_seconds: 0.0,
            exit_code: 0,
        }
    }

    /// The report of a run that could not proceed.
    pub fn failed(buildroot: String, why: &str) -> Report {
        Report {
            fatal_error: Some(why.to_string()),
            exit_code: 2,
            ..Report::new(buildroot)
        }
    }

    /// Sort the problems, count them and set the exit status.
    pub fn seal(&mut self) {
        self.problems.sort();
        self.problems.dedup();
        self.counts.clear();
        for p in &self.problems {
            *self.counts.entry(p.kind.name()).or_insert(0) += 1;
        }
        self.problem_count = self.problems.len() as u64;
        self.not_checked.sort();
        self.exit_code = i32::from(!self.problems.is_empty());
    }

    /// The line for the build log.
    pub fn line(&self) -> String {
        let not_compiling: usize = self.versions.iter().map(|v| v.do_not_compile.len()).sum();
        let mut line = format!(
            "pyclink verify: {} pyc checked, {}",
            self.pycs_checked,
            plural(self.problem_count, "problem")
        );
        let mut notes = Vec::new();
        if not_compiling > 0 {
            let verb = if not_compiling == 1 { "does" } else { "do" };
            notes.push(format!(
                "{} {verb} not compile",
                plural(not_compiling as u64, "source")
            ));
        }
        if !self.not_checked.is_empty() {
            notes.push(format!("{} left alone", self.not_checked.len()));
        }
        if !notes.is_empty() {
            line += &format!(" ({})", notes.join(", "));
        }
        line
    }

    /// The problems as printed: grouped by kind, at most `cap` per kind (all with `None`),
    /// each group's overflow in one line.
    pub fn problem_lines(&self, cap: Option<usize>) -> String {
        let mut out = String::new();
        let mut by_kind: BTreeMap<Kind, Vec<&Problem>> = BTreeMap::new();
        for p in &self.problems {
            by_kind.entry(p.kind).or_default().push(p);
        }
        for (kind, problems) in by_kind {
            let shown = cap.unwrap_or(usize::MAX).min(problems.len());
            for p in &problems[..shown] {
                out += &format!("{}\n", crate::escape::printable(&p.to_string()));
            }
            if shown < problems.len() {
                out += &format!(
                    "pyclink verify: ... and {} more {kind} (-v or --summary-json lists every one)\n",
                    problems.len() - shown
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_capped_and_counted() {
        let mut r = Report::new("/br".into());
        for i in 0..5 {
            r.problems
                .push(Problem::new(Kind::Stray, format!("/s{i}"), "no source"));
        }
        r.problems
            .push(Problem::new(Kind::Stale, "/a.pyc", "mtime 1 in its header"));
        r.pycs_checked = 9;
        r.seal();
        assert_eq!(r.exit_code, 1);
        assert_eq!(r.counts["stray"], 5);
        assert_eq!(r.line(), "pyclink verify: 9 pyc checked, 6 problems");
        let text = r.problem_lines(Some(2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/a.pyc: stale: mtime 1 in its header");
        assert_eq!(lines[1], "/s0: stray: no source");
        assert!(lines[3].contains("and 3 more stray"), "{text}");
        assert_eq!(r.problem_lines(None).lines().count(), 6);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["problems"][0]["kind"], "stale");
        assert_eq!(json["schema"], SCHEMA);
    }
}
