//! The shell blocks of README.md and docs/ that tell a user what to run. Each is marked on the
//! line before its fence, and `tests/docs.rs` refuses an unmarked one:
//!
//! - `<!-- run by tests/FILE.rs as ID -->`: that test runs the block's commands, taken from the
//!   page with [`doc_block`], so the page cannot drift from what is tested;
//! - `<!-- run by .ci/run -->`: the CI script runs it;
//! - `<!-- examples: WHY -->`: commands with placeholders (a build root, a spec); the flags
//!   given to `pyclink` in them are checked by `tests/docs.rs`.

use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A fenced shell block and the marker before it.
pub struct Block {
    pub page: String,
    pub line: usize,
    pub marker: Option<String>,
    pub text: String,
}

/// README.md and every page of docs/, by their path in the repository, with their text.
pub fn pages() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(Path::new(REPO).join(&p)).unwrap();
            (p, text)
        })
        .collect()
}

/// Every ```sh block of README.md and docs/*.md.
pub fn shell_blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for (page, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let fence = lines[i].trim_start();
            if !fence.starts_with("```") {
                i += 1;
                continue;
            }
            let body_start = i + 1;
            let mut end = body_start;
            while end < lines.len() && !lines[end].trim_start().starts_with("```") {
                end += 1;
            }
            if matches!(fence, "```sh" | "```bash" | "```console" | "```shell") {
                let marker = i
                    .checked_sub(1)
                    .map(|p| lines[p].trim())
                    .filter(|l| l.starts_with("<!--") && l.ends_with("-->"))
                    .map(|l| l[4..l.len() - 3].trim().to_string());
                out.push(Block {
                    page: page.clone(),
                    line: i + 1,
                    marker,
                    text: lines[body_start..end.min(lines.len())].join("\n"),
                });
            }
            i = end + 1;
        }
    }
    out
}

/// The commands of the block marked `run by tests/... as ID`: one string per command, comments
/// and blank lines dropped, `\` continuations joined.
pub fn doc_block(id: &str) -> Vec<String> {
    let mut found: Vec<Block> = shell_blocks()
        .into_iter()
        .filter(|b| {
            b.marker
                .as_deref()
                .and_then(|m| m.rsplit_once(" as "))
                .is_some_and(|(_, name)| name.trim() == id)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one block of README.md or docs/ is marked `as {id}`"
    );
    let block = found.pop().unwrap();
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in block.text.lines() {
        let line = match line.find(" #") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(!commands.is_empty(), "the block `{id}` holds no command");
    commands
}

/// The words of a command as `sh` splits them, for the simple quoting the docs use.
pub fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}
