//! The modules form layers: no module depends, through others, on itself. The stages follow
//! the pipeline (discover → plan → compile → write → report), with `python`, `fsroot`, `escape`
//! and `problem` below them; `cli::common` (the shared flags) is below both `cli` and
//! `verify::args`. A cycle would make every module on it depend on all the others, which is
//! what this test keeps from coming back: it reads `crate::` paths in the sources, so it
//! needs no build of anything but itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer a source file belongs to: its top-level module, except `cli::common`.
fn node(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        // Module names, not a message.
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [cli, common, ..] if cli == "cli" && common == "common" => "cli::common".into(),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// The layers the code (tests left out) of one file names through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    // Test modules come last in every file, and may reach anywhere.
    let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let top = ident(name);
            let sub = name.get(top.len()..).and_then(|r| r.strip_prefix("::"));
            if top == "cli" && sub.is_some_and(|s| ident(s) == "common") {
                out.insert("cli::common".to_string());
            } else if !top.is_empty() {
                out.insert(top);
            }
        }
    }
    // `cli.rs` names its child module without `crate::`.
    if code.contains("\npub mod common;") {
        out.insert("cli::common".to_string());
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(&src) {
        let e = e.unwrap();
        if e.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let from = node(e.path().strip_prefix(&src).unwrap());
        let text = std::fs::read_to_string(e.path()).unwrap();
        let entry = graph.entry(from.clone()).or_default();
        entry.extend(uses(&text).into_iter().filter(|to| *to != from));
    }
    graph
}

/// A cycle through `start`, if there is one, as the path that closes it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_module_depends_on_itself() {
    let graph = graph();
    assert!(graph.contains_key("problem") && graph.contains_key("cli::common"));
    for start in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, start) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_vocabulary_is_below_the_stages() {
    let graph = graph();
    let stages = [
        "discover", "plan", "compile", "write", "report", "cli", "verify",
    ];
    for low in ["python", "fsroot", "escape", "problem", "cli::common"] {
        for stage in stages {
            assert!(!graph[low].contains(stage), "{low} names the stage {stage}");
        }
    }
    // The report is on top: no stage reads it.
    for stage in ["discover", "plan", "compile", "write"] {
        assert!(!graph[stage].contains("report"), "{stage} names report");
    }
}
