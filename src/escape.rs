//! File names as text. A name may hold any byte but `/` and NUL: a newline would split one
//! message into two lines (and forge a second `pyclink: error:` line), an escape sequence would
//! reach the terminal, and bytes that are not UTF-8 would come out as U+FFFD, matching no file.
//! So every path that appears in a message is written with [`shown`] (never `Path::display`
//! or `to_string_lossy`): [`path_text`] (non-UTF-8 bytes as `\xff`, a backslash as `\\`), then
//! [`printable`] (control characters as `\n`, `\x1b`...). The JSON keeps names as
//! [`path_text`] makes them, control characters included (JSON encodes them), and every line
//! printed for a human goes through [`printable`], which leaves what [`shown`] made as it is.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;

/// `name` as UTF-8 text: valid UTF-8 as it is (control characters included, for the JSON to
/// encode), each byte that is not UTF-8 as `\xNN`, and a backslash as `\\`, so that the name
/// with byte 0xff and the one spelled `\xff` stay two names.
pub fn path_text(name: &OsStr) -> Cow<'_, str> {
    let bytes = name.as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains('\\') {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path or file name as every message shows it: [`path_text`], then [`printable`], so that
/// it is one line, names one file and sends no escape sequence to the terminal.
pub fn shown<P: AsRef<OsStr> + ?Sized>(path: &P) -> Shown<'_> {
    Shown(path.as_ref())
}

/// The path `rel` (relative to the build root) as the installed system sees it, `/` + `rel`,
/// shown as [`shown`] shows any path.
pub fn shown_in_root(rel: &std::path::Path) -> String {
    format!("/{}", shown(rel))
}

/// See [`shown`]; formats without allocating when the name needs no escape.
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a OsStr);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&printable(&path_text(self.0)))
    }
}

/// `line` safe to print as one line: every control character (C0, DEL, C1) escaped, `\n`,
/// `\r` and `\t` by name, the others as `\x1b` (C1 as `\u{9b}`, unlike a raw byte's `\x9b`).
/// The bidirectional controls too (`\u{202e}`): printed raw, they reorder the rest of the line
/// on a terminal, so that a name shows as another.
pub fn printable(line: &str) -> Cow<'_, str> {
    if !line.chars().any(needs_escape) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// "1 source", "2 sources": counts in messages, shown by every layer (hence here, at the
/// bottom, and not in the report).
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_printable_line() {
        let name = OsStr::from_bytes(b"dir/new\nline\x1b[31m\xffname\xc3.py");
        let text = path_text(name);
        assert_eq!(text, "dir/new\nline\x1b[31m\\xffname\\xc3.py");
        assert_eq!(printable(&text), "dir/new\\nline\\x1b[31m\\xffname\\xc3.py");
        assert_eq!(printable("tab\there\u{9b}é"), "tab\\there\\u{9b}é");
        assert!(matches!(printable("/usr/lib/é.py"), Cow::Borrowed(_)));
        assert!(matches!(path_text(OsStr::new("plain")), Cow::Borrowed(_)));
    }

    /// Report 2, items 3 and 15: the byte 0xff and a literal `\xff` print differently, and
    /// bidirectional controls are escaped (but a backslash in a message line is left alone).
    #[test]
    fn escapes_are_unambiguous() {
        let byte = path_text(OsStr::from_bytes(b"bad\xffname.py")).into_owned();
        let literal = path_text(OsStr::from_bytes(br"bad\xffname.py")).into_owned();
        assert_eq!(byte, r"bad\xffname.py");
        assert_eq!(literal, r"bad\\xffname.py");
        assert_eq!(path_text(OsStr::from_bytes(b"a\\\xff")), r"a\\\xff");
        assert_eq!(
            printable("x\u{202e}y\u{2066}\u{200f}.py"),
            r"x\u{202e}y\u{2066}\u{200f}.py"
        );
        assert_eq!(
            printable(r"SyntaxError: '\N' escape"),
            r"SyntaxError: '\N' escape"
        );
    }

    /// Issue 22, item 8: every path in a message goes through `shown`. `Path::display` and
    /// `to_string_lossy` print a byte that is not UTF-8 as U+FFFD and keep a newline raw (which
    /// forges a second `pyclink: error:` line), so outside tests they may only serve what is no
    /// message, and say so on the line or the one above (`not a message`). This finds a new one.
    #[test]
    fn no_path_reaches_a_message_unescaped() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut raw = Vec::new();
        let mut files = 0;
        for entry in walkdir::WalkDir::new(&src) {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                // The test modules come last in every file.
                if *line == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.ends_with('{')) {
                    break;
                }
                let code = line.split("//").next().unwrap_or_default();
                let excused = |l: &str| l.to_lowercase().contains("not a message");
                if (code.contains(".display()") || code.contains(".to_string_lossy()"))
                    && !excused(line)
                    && !(i > 0 && excused(lines[i - 1]))
                {
                    raw.push(format!(
                        "{}:{}: {}",
                        path.strip_prefix(&src).unwrap().display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
        assert!(files > 30, "only {files} source files found under {src:?}");
        assert!(
            raw.is_empty(),
            "paths printed without escape::shown:\n{}",
            raw.join("\n")
        );
    }
}
