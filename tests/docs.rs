//! The README and docs/ name only what exists: every link and repository path is a file, every
//! option given to `pyclink` is one of its flags, every config key is one the config file takes,
//! every RPM macro `%_pyclink_*` is defined, every `PYCLINK_*` variable is read somewhere; and
//! the README stays short enough to read in two minutes.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The `code spans` and fenced blocks of a page, line by line.
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_string());
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(span) = parts.next() {
            out.push(span.to_string());
            parts.next();
        }
    }
    out
}

#[test]
fn the_readme_is_short() {
    let n = std::fs::read_to_string(Path::new(REPO).join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(
        n <= 200,
        "README.md has {n} lines; the rest belongs in docs/"
    );
}

#[test]
fn links_and_repository_paths_exist() {
    let roots = [
        "src/",
        "tests/",
        "macros/",
        "packaging/",
        "scripts/",
        "bench/",
        "docs/",
        "examples/",
        "fuzz/",
        ".ci/",
        ".config/",
    ];
    let mut missing = Vec::new();
    for (page, text) in doc_blocks::pages() {
        let dir = Path::new(&page).parent().unwrap().to_path_buf();
        // Markdown links to local files, relative to the page.
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.contains("://") {
                continue;
            }
            if !Path::new(REPO).join(&dir).join(file).exists() {
                missing.push(format!("{page}: link to {target}"));
            }
        }
        // Repository paths in code: src/..., tests/..., as written from the repository's top.
        for span in code(&text) {
            for word in span.split(|c: char| c.is_whitespace() || "`'\"(),;:".contains(c)) {
                let word = word.trim_end_matches('.');
                if !roots.iter().any(|r| word.starts_with(r)) || word.contains(['*', '$', '{', '<'])
                {
                    continue;
                }
                if !Path::new(REPO).join(word).exists() {
                    missing.push(format!("{page}: {word}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not there:\n{}",
        missing.join("\n")
    );
}

/// Every long option of `pyclink` and of its subcommands.
fn flags() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                out.insert(format!("--{l}"));
            }
            for alias in a.get_all_aliases().unwrap_or_default() {
                out.insert(format!("--{alias}"));
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, out);
        }
    }
    let mut out = BTreeSet::from(["--help".to_string(), "--version".to_string()]);
    // generate::command() is the CLI with the hidden `--generate` that `make install` runs.
    walk(&pyclink::generate::command(), &mut out);
    out
}

#[test]
fn every_option_given_to_pyclink_exists() {
    let known = flags();
    let mut unknown = Vec::new();
    for (page, text) in doc_blocks::pages() {
        for span in code(&text) {
            // A pyclink command line: from `pyclink` to the end of the span or line (a pipe or
            // `;` ends it).
            let Some(at) = span
                .match_indices("pyclink ")
                .map(|(i, _)| i)
                .find(|&i| i == 0 || span[..i].ends_with([' ', '/', '$', '(', '"']))
            else {
                continue;
            };
            let cmd = span[at..].split(['|', ';', '#']).next().unwrap();
            for word in cmd.split_whitespace() {
                let flag = word
                    .split('=')
                    .next()
                    .unwrap()
                    .trim_matches(['"', '\'', ',', ')']);
                if flag.starts_with("--") && flag.len() > 2 && !known.contains(flag) {
                    unknown.push(format!("{page}: {flag} in `{cmd}`"));
                }
            }
        }
        // The option tables: a first column that is a flag.
        for line in text.lines().filter(|l| l.starts_with("| `--")) {
            let flag = line[3..].split(['`', ' ', '=']).next().unwrap();
            if !known.contains(flag) {
                unknown.push(format!("{page}: table row for {flag}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not pyclink options:\n{}",
        unknown.join("\n")
    );
}

/// The config file example in docs/config.md is taken whole by pyclink's config parser: each key
/// it shows exists (an unknown key is refused by name).
#[test]
fn every_config_key_shown_exists() {
    let text = std::fs::read_to_string(Path::new(REPO).join("docs/config.md")).unwrap();
    let block = text
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/config.md shows the config file in a ```toml block");
    let keys = block.lines().filter(|l| l.contains(" = ")).count();
    assert!(keys > 10, "{keys} keys");
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("pyclink.toml");
    // The example's interpreter paths are this machine's host python3, which must exist.
    let python = find_python(&host_python3_version()).expect("the host python3");
    let block: String = block
        .lines()
        .map(|l| match l.split_once(" = \"/") {
            Some((key, _)) if key.trim_start().starts_with('"') => {
                format!("{key} = \"{}\"\n", python.display())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&config, block).unwrap();
    let out = run(pyclink()
        .arg("--config")
        .arg(&config)
        .arg("--buildroot")
        .arg(t.path())
        .arg("--dry-run"));
    let err = stderr(&out);
    assert!(
        !err.contains("unknown field") && !err.contains("config file"),
        "docs/config.md's example is not a config pyclink takes:\n{err}"
    );
}

#[test]
fn every_rpm_macro_and_environment_variable_named_exists() {
    let macros = std::fs::read_to_string(Path::new(REPO).join("macros/macros.pyclink")).unwrap()
        + &std::fs::read_to_string(Path::new(REPO).join("macros/macros.pyclink-plain")).unwrap();
    let mut sources = String::new();
    for dir in [
        "src",
        "tests",
        "macros",
        "packaging",
        "scripts",
        "bench",
        ".ci",
    ] {
        for e in walkdir::WalkDir::new(Path::new(REPO).join(dir)) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                sources += &String::from_utf8_lossy(&std::fs::read(e.path()).unwrap());
            }
        }
    }
    let word_at = |text: &str, i: usize| -> String {
        text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut missing = Vec::new();
    for (page, text) in doc_blocks::pages() {
        for (i, _) in text.match_indices("%_pyclink_") {
            let name = word_at(&text, i + 1);
            if !macros.contains(&format!("%{name} ")) {
                missing.push(format!("{page}: %{name}"));
            }
        }
        for (i, _) in text.match_indices("PYCLINK_") {
            let name = word_at(&text, i);
            if !name.ends_with('_')
                && !sources.contains(&format!("\"{name}\""))
                && !sources.contains(&format!("{name}="))
                && !sources.contains(&format!("${{{name}"))
            {
                missing.push(format!("{page}: {name}"));
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "named but not defined:\n{}",
        missing.join("\n")
    );
}

/// Every shell block of README.md and docs/ is run by a test (which takes its commands from the
/// page: `common::doc_blocks`), by `.ci/run`, or is marked as examples with placeholders.
#[test]
fn every_command_shown_is_run_or_marked_as_examples() {
    let mut bad = Vec::new();
    for b in doc_blocks::shell_blocks() {
        let at = format!("{}:{}", b.page, b.line);
        match b.marker.as_deref() {
            Some(m) if m.starts_with("examples:") => {}
            Some("run by .ci/run") => {
                let ci = std::fs::read_to_string(Path::new(REPO).join(".ci/run")).unwrap();
                for cmd in b.text.lines().map(str::trim) {
                    if !cmd.is_empty() && !cmd.starts_with('#') && !ci.contains(cmd) {
                        bad.push(format!("{at}: `{cmd}` is not in .ci/run"));
                    }
                }
            }
            Some(m) if m.starts_with("run by tests/") => {
                let (file, id) = m["run by ".len()..].split_once(" as ").unwrap_or((m, ""));
                let uses = std::fs::read_to_string(Path::new(REPO).join(file))
                    .map(|t| t.contains(&format!("doc_block(\"{}\")", id.trim())))
                    .unwrap_or(false);
                if !uses {
                    bad.push(format!("{at}: {file} does not run doc_block(\"{id}\")"));
                }
            }
            other => bad.push(format!(
                "{at}: shell block without a `<!-- run by ... -->` or `<!-- examples: ... -->` \
                 marker ({other:?})"
            )),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The README's first command (scripts/demo) builds pyclink and runs it on a real root; here
/// with the binary under test (`PYCLINK`), so that the suite does not rebuild it.
#[test]
fn the_demo_runs() {
    let cmds = doc_blocks::doc_block("readme-demo");
    assert_eq!(cmds, ["scripts/demo"]);
    let out = run(
        std::process::Command::new(Path::new(REPO).join("scripts/demo"))
            .env("PYCLINK", env!("CARGO_BIN_EXE_pyclink")),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "scripts/demo failed:\n{text}");
    assert!(text.contains(" pyc ("), "no summary line:\n{text}");
}
