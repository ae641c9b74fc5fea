use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let invocation = match pyclink::cli::Cli::parse().into_invocation() {
        Ok(i) => i,
        Err(e) => return fatal(&e),
    };
    let level = match (invocation.settings.quiet, invocation.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
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
            writeln!(buf, "pyclink: {word}: {}", record.args())
        })
        .init();
    if let Err(e) = pyclink::cleanup::install_signal_handler() {
        log::warn!("cannot catch SIGINT/SIGTERM ({e}); an interrupt may leave temp files for the next run to remove");
    }

    let settings = &invocation.settings;
    let report = match pyclink::run(settings) {
        Ok(r) => r,
        Err(e) => return fatal(&format!("{e:#}")),
    };
    if !settings.quiet {
        let lines: String = report.versions.iter().map(|v| v.line() + "\n").collect();
        match std::io::stdout().lock().write_all(lines.as_bytes()) {
            Ok(()) => {}
            // A reader that stopped early (`| head -1`) is not our failure: the pycs are
            // written and the exit status still says how the run went.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return fatal(&format!("cannot write the summary to stdout: {e}")),
        }
    }
    if let Some(path) = &settings.summary_json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            return fatal(&format!("cannot write {}: {e}", path.display()));
        }
    }
    ExitCode::from(report.exit_code as u8)
}

/// The run could not proceed: say why (never panicking on a closed stderr) and exit 2.
fn fatal(msg: &str) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for line in msg.lines() {
        let _ = writeln!(err, "pyclink: error: {line}");
    }
    ExitCode::from(2)
}
