//! The `pyclink` binary: parse the command line, set up logging, run, print the summary lines
//! and the JSON, and exit with the run's status. Everything else is in the library.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::FromArgMatches;

use pyclink::cli::{CommandLine, Invocation, JsonTarget, ReportKind};
use pyclink::escape::{printable, shown};
use pyclink::report::RunReport;

fn main() -> ExitCode {
    let line = match parse() {
        Ok(Parsed::Run(line)) => *line,
        Ok(Parsed::Generate(item)) => return generate(&item),
        // --help and --version print and exit 0; a bad command line gets pyclink's prefix.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = write!(std::io::stderr(), "pyclink: {}", e.render());
            return ExitCode::from(2);
        }
    };
    let json = line.json_target();
    let json = json.as_ref();
    let invocation = match line.into_invocation() {
        Ok(i) => i,
        Err(e) => return fatal(&e.to_string(), json),
    };
    init_logging(invocation.verbose());
    if let Err(e) = pyclink::cleanup::install_signal_handler() {
        log::warn!("cannot catch SIGINT/SIGTERM ({e}); an interrupt may leave temp files for the next run to remove");
    }
    // Find out now, not after every pyc is written, that the JSON cannot be written.
    if let Some(path) = json.filter(|j| !j.is_stdout()).map(|j| &j.path) {
        if let Err(e) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            return fatal(&format!("cannot write {}: {e}", shown(path)), None);
        }
    }
    match &invocation {
        Invocation::Compile { settings, .. } => compile(settings, json),
        Invocation::Normalize(n) => normalize(n, json),
        Invocation::Verify(v) => verify(v, json),
    }
}

fn compile(settings: &pyclink::settings::Settings, json: Option<&JsonTarget>) -> ExitCode {
    // A dry run writes nothing, not even the JSON (`json_target` gives none for it).
    if settings.dry_run {
        return match pyclink::list(settings) {
            Ok(text) => match print(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fatal(&format!("cannot write to stdout: {e}"), None),
            },
            Err(e) => fatal(&e.to_string(), None),
        };
    }
    let report = match pyclink::run(settings) {
        Ok(r) => r,
        Err(e) => return fatal(&e.to_string(), json),
    };
    // -q keeps the lines of versions whose pycs are raw for want of validation: a packager
    // must see that the version table does not vouch for them.
    let lines: String = report
        .versions
        .iter()
        .filter(|v| !settings.quiet || v.unvalidated.is_some())
        .map(|v| v.line() + "\n")
        .collect();
    finish(false, &lines, json, &report, report.exit_code)
}

fn normalize(n: &pyclink::cli::NormalizeInvocation, json: Option<&JsonTarget>) -> ExitCode {
    let root = match pyclink::fsroot::Root::open(&n.buildroot) {
        Ok(r) => r,
        Err(e) => return fatal(&e.to_string(), json),
    };
    let report = match pyclink::normalize::normalize(&root, &n.options) {
        Ok(r) => r,
        Err(e) => return fatal(&e.to_string(), json),
    };
    finish(
        n.quiet,
        &(report.line() + "\n"),
        json,
        &report,
        report.exit_code,
    )
}

enum Parsed {
    Run(Box<CommandLine>),
    Generate(pyclink::generate::Item),
}

/// The command line, with the hidden `--generate WHAT` that `make install` runs.
fn parse() -> Result<Parsed, clap::Error> {
    let matches = pyclink::generate::command().try_get_matches()?;
    match matches.get_one::<pyclink::generate::Item>("generate") {
        Some(item) => Ok(Parsed::Generate(item.clone())),
        None => pyclink::cli::Cli::from_arg_matches(&matches)
            .map(|c| Parsed::Run(Box::new(CommandLine::new(c)))),
    }
}

/// `--generate WHAT`: a man page or completion script on stdout.
fn generate(item: &pyclink::generate::Item) -> ExitCode {
    let mut out = Vec::new();
    if let Err(e) = pyclink::generate::write(item, &mut out) {
        return fatal(&e, None);
    }
    match print(&String::from_utf8_lossy(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&format!("cannot write to stdout: {e}"), None),
    }
}

fn verify(v: &pyclink::verify::VerifyInvocation, json: Option<&JsonTarget>) -> ExitCode {
    let report = match pyclink::fsroot::Root::open(&v.buildroot)
        .map_err(pyclink::verify::Error::from)
        .and_then(|root| pyclink::verify::verify(&root, &v.options))
    {
        Ok(r) => r,
        Err(e) => return fatal(&e.to_string(), json),
    };
    let cap = (v.verbose == 0).then_some(20);
    let mut text = report.problem_lines(cap);
    if !v.quiet {
        text += &(report.line() + "\n");
    }
    finish(false, &text, json, &report, report.exit_code)
}

/// Print the summary, write the JSON, and exit with `code`.
fn finish(
    quiet: bool,
    summary: &str,
    json: Option<&JsonTarget>,
    report: &impl serde::Serialize,
    code: i32,
) -> ExitCode {
    if !quiet {
        // With the JSON on stdout, the summary goes to stderr so that stdout is one JSON
        // document.
        if json.is_some_and(JsonTarget::is_stdout) {
            let _ = std::io::stderr().lock().write_all(summary.as_bytes());
        } else if let Err(e) = print(summary) {
            return fatal(&format!("cannot write the summary to stdout: {e}"), json);
        }
    }
    if let Some(j) = json {
        if let Err(e) = write_json(&j.path, report) {
            return fatal(&format!("cannot write {}: {e}", shown(&j.path)), None);
        }
    }
    ExitCode::from(code as u8)
}

/// Errors and warnings are always logged: `-q` only drops the summary lines (see `finish`). A
/// quiet level that hid them would let a build with `--errors warn` drop pycs in silence.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            let word = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "note",
                log::Level::Debug | log::Level::Trace => "debug",
            };
            // One message, one line, whatever the file names in it hold.
            let text = record.args().to_string();
            writeln!(buf, "pyclink: {word}: {}", printable(&text))
        })
        .init();
}

/// Write to stdout. A reader that stopped early (`| head -1`) is not our failure: the pycs are
/// written and the exit status still says how the run went.
fn print(text: &str) -> std::io::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// `--summary-json FILE`, or `-` for stdout.
fn write_json(path: &Path, report: &impl serde::Serialize) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).expect("a report serializes") + "\n";
    if path == Path::new("-") {
        print(&json)
    } else {
        std::fs::write(path, json)
    }
}

/// The run could not proceed: say why (never panicking on a closed stderr), record it in the
/// JSON if one was asked for (in the subcommand's own report), and exit 2.
fn fatal(msg: &str, json: Option<&JsonTarget>) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for line in msg.lines() {
        let _ = writeln!(err, "pyclink: error: {}", printable(line));
    }
    if let Some(j) = json {
        let root = j.buildroot.clone();
        let written = match j.kind {
            ReportKind::Compile => write_json(
                &j.path,
                &RunReport {
                    buildroot: root,
                    ..RunReport::failed(msg)
                },
            ),
            ReportKind::Normalize => {
                write_json(&j.path, &pyclink::normalize::Report::failed(root, msg))
            }
            ReportKind::Verify => write_json(&j.path, &pyclink::verify::Report::failed(root, msg)),
        };
        if let Err(e) = written {
            let _ = writeln!(err, "pyclink: error: cannot write {}: {e}", shown(&j.path));
        }
    }
    ExitCode::from(2)
}
