//! Which optimization levels of a source are certainly identical, decided from its text so
//! that only the distinct levels are compiled (the rest are linked).
//!
//! CPython's levels differ only as follows: level 1 drops `assert` statements and folds the
//! name `__debug__` to False; level 2 also drops docstrings (the first statement of a module,
//! class or function body when it is a string literal). So level 1 equals level 0 when the
//! source has no `assert` and no `__debug__`, and level 2 equals level 1 when it has no
//! docstring. A tokenizer decides, conservatively: anything it cannot vouch for keeps every
//! level compiled.
//!
//! - `assert` is a hard keyword, so any `assert` name token outside strings and comments counts.
//! - `__debug__` anywhere in the bytes counts, even in strings and comments (it may be code
//!   inside an f-string replacement field or format spec; it is rare enough not to matter).
//! - Any string literal that starts a statement (at the start of a logical line, or after a
//!   `:` or `;` outside brackets, parentheses included: `("doc")` is one) counts as a possible
//!   docstring, whatever its prefix.
//! - Bytes the tokenizer does not follow (an unterminated string, a stray character) count as
//!   "unsure", as does a source that is not UTF-8 or declares an encoding cookie.

/// Which adjacent levels are certainly identical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Same(u8);

impl Same {
    /// Level 1 is certainly identical to level 0.
    pub const LEVEL1_IS_LEVEL0: u8 = 0b01;
    /// Level 2 is certainly identical to level 1.
    pub const LEVEL2_IS_LEVEL1: u8 = 0b10;

    pub fn nothing() -> Same {
        Same(0)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn level1_is_level0(self) -> bool {
        self.0 & Self::LEVEL1_IS_LEVEL0 != 0
    }

    pub fn level2_is_level1(self) -> bool {
        self.0 & Self::LEVEL2_IS_LEVEL1 != 0
    }
}

/// What the text of a source tells before it is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub same: Same,
    /// The source may have a non-ASCII name (identifier, attribute, keyword). Compiling it may
    /// intern a latin-1 one-character string for the rest of the process (names are
    /// NFKC-normalized, so not only latin-1 spellings), so the worker compiles later sources with
    /// such a constant afresh (see worker.py).
    pub non_ascii_names: bool,
}

/// Predict from the source bytes.
pub fn predict(source: &[u8]) -> Prediction {
    match scan(source) {
        Some(found) => {
            let mut bits = 0;
            if !found.assert_or_debug {
                bits |= Same::LEVEL1_IS_LEVEL0;
            }
            if !found.docstring {
                bits |= Same::LEVEL2_IS_LEVEL1;
            }
            Prediction {
                same: Same(bits),
                non_ascii_names: found.non_ascii_name,
            }
        }
        None => Prediction {
            same: Same::nothing(),
            non_ascii_names: !source.is_ascii(),
        },
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    assert_or_debug: bool,
    docstring: bool,
    non_ascii_name: bool,
}

/// Tokenize just enough to find `assert` tokens and statement-starting strings; `None` when
/// unsure.
fn scan(src: &[u8]) -> Option<Found> {
    let src = src.strip_prefix(b"\xef\xbb\xbf").unwrap_or(src);
    // A non-UTF-8 source (or one with a coding cookie) is decoded by CPython in ways this scan
    // does not follow; leave such files alone.
    std::str::from_utf8(src).ok()?;
    if has_coding_cookie(src) {
        return None;
    }
    let mut found = Found {
        assert_or_debug: contains(src, b"__debug__"),
        ..Found::default()
    };
    let mut depth: usize = 0;
    // True where a string literal would start a statement.
    let mut statement_start = true;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        match c {
            b'#' => {
                i = memchr::memchr(b'\n', &src[i..]).map_or(src.len(), |n| i + n);
                continue;
            }
            b'\\' => {
                // A line continuation: the logical line goes on.
                match src.get(i + 1) {
                    Some(b'\n') => i += 2,
                    Some(b'\r') if src.get(i + 2) == Some(&b'\n') => i += 3,
                    Some(b'\r') => i += 2,
                    _ => return None,
                }
                continue;
            }
            b'\n' | b'\r' => {
                if depth == 0 {
                    statement_start = true;
                }
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'(' => {
                // `("doc")` is still a docstring: a statement-starting paren keeps the flag.
                depth += 1;
                i += 1;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                statement_start = false;
                i += 1;
                continue;
            }
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                statement_start = false;
                i += 1;
                continue;
            }
            b':' | b';' => {
                // `def f(): "doc"` and `x = 1; "doc"`: a string can start a statement here.
                // (`:=` and annotations make this conservative, never wrong.)
                statement_start = depth == 0;
                i += 1;
                continue;
            }
            b'"' | b'\'' => {
                if statement_start {
                    found.docstring = true;
                }
                i = skip_string(src, i)?;
                statement_start = false;
                continue;
            }
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < src.len()
                && (src[i].is_ascii_alphanumeric() || src[i] == b'_' || src[i] >= 0x80)
            {
                i += 1;
            }
            let word = &src[start..i];
            if !word.is_ascii() {
                found.non_ascii_name = true;
            }
            // A string prefix (r, b, f, u, rb, br, fr, rf... any case) right before a quote.
            if matches!(src.get(i), Some(b'"' | b'\'')) && is_string_prefix(word) {
                if statement_start {
                    found.docstring = true;
                }
                i = skip_string(src, i)?;
                statement_start = false;
                continue;
            }
            if word == b"assert" {
                found.assert_or_debug = true;
            }
            statement_start = false;
            continue;
        }
        if c.is_ascii_digit() || c == b'.' {
            // Numbers and dots: consume the run (1.5e-3, 0x1f, 1_000, ..., obj.attr's dot).
            i += 1;
            while i < src.len()
                && (src[i].is_ascii_alphanumeric() || src[i] == b'_' || src[i] == b'.')
            {
                i += 1;
            }
            statement_start = false;
            continue;
        }
        if b"+-*/%@&|^~<>=!,".contains(&c) {
            statement_start = false;
            i += 1;
            continue;
        }
        // Anything else ($, ?, backtick, control characters): not something to vouch for.
        return None;
    }
    (depth == 0).then_some(found)
}

fn is_string_prefix(word: &[u8]) -> bool {
    word.len() <= 2
        && word
            .iter()
            .all(|c| matches!(c.to_ascii_lowercase(), b'r' | b'b' | b'f' | b'u'))
}

/// Skip the string literal whose opening quote is at `start`; returns the index after it.
/// Escapes are skipped in every kind of string (a raw string's `\"` does not end it either).
/// F-string replacement fields may hold further strings (3.12 even the same quote): they are
/// skipped as part of the literal, which is safe since only `assert`/docstrings matter and
/// neither can appear inside an expression.
fn skip_string(src: &[u8], start: usize) -> Option<usize> {
    let q = src[start];
    let triple = src.get(start + 1) == Some(&q) && src.get(start + 2) == Some(&q);
    let mut i = start + if triple { 3 } else { 1 };
    while i < src.len() {
        // Jump to the next byte that can matter.
        let next = if triple {
            memchr::memchr2(b'\\', q, &src[i..])
        } else {
            memchr::memchr3(b'\\', q, b'\n', &src[i..])
        };
        i += next?;
        match src[i] {
            b'\\' => i += 2,
            c if c == q => {
                if !triple {
                    return Some(i + 1);
                }
                if src.get(i + 1) == Some(&q) && src.get(i + 2) == Some(&q) {
                    return Some(i + 3);
                }
                i += 1;
            }
            b'\n' if !triple => return None,
            _ => i += 1,
        }
    }
    None
}

/// PEP 263: `coding[:=]` in a comment on one of the first two lines.
fn has_coding_cookie(src: &[u8]) -> bool {
    src.split(|&c| c == b'\n').take(2).any(|line| {
        line.trim_ascii_start().starts_with(b"#")
            && (contains(line, b"coding:") || contains(line, b"coding="))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> (bool, bool) {
        let s = predict(src.as_bytes()).same;
        (s.level1_is_level0(), s.level2_is_level1())
    }

    #[test]
    fn non_ascii_names_are_flagged() {
        assert!(predict("\u{e4} = 1\n".as_bytes()).non_ascii_names);
        assert!(
            predict("x.\u{212b}\n".as_bytes()).non_ascii_names,
            "NFKC makes it latin-1"
        );
        assert!(!predict("x = '\u{e4}'  # J\u{fc}rgen\n".as_bytes()).non_ascii_names);
        assert!(!predict(b"x = 1\n").non_ascii_names);
        // Unsure scans flag any non-ASCII byte.
        assert!(predict(b"x = '\xe4'\n").non_ascii_names);
        assert!(!predict(b"x = (\n").non_ascii_names);
    }

    #[test]
    fn the_four_cpython_cases() {
        assert_eq!(p("x = 1\n"), (true, true));
        assert_eq!(p("assert x\n"), (false, true));
        assert_eq!(p("\"\"\"doc\"\"\"\nx = 1\n"), (true, false));
        assert_eq!(p("\"\"\"doc\"\"\"\nassert x\n"), (false, false));
    }

    #[test]
    fn docstrings_where_cpython_has_them() {
        assert_eq!(p("def f():\n    'doc'\n    return 1\n"), (true, false));
        assert_eq!(p("class A:\n    r'''doc'''\n"), (true, false));
        assert_eq!(p("async def f(): \"doc\"\n"), (true, false));
        assert_eq!(
            p("def f(): return 1; 'x'\n"),
            (true, false),
            "conservative after ';'"
        );
        assert_eq!(p("# comment\n\n'''module doc'''\n"), (true, false));
        // A parenthesized string is the same Expr(Constant): a docstring.
        assert_eq!(p("('doc')\n"), (true, false));
        assert_eq!(p("def f():\n    ((\n      'a' 'b'))\n"), (true, false));
        // Not statement-starting: a call argument, an assignment value, a dict value.
        assert_eq!(
            p("x = 'a'\nf('b')\nd = {1: 'c'}\ny = (\n  'd'\n)\n"),
            (true, true)
        );
    }

    #[test]
    fn asserts_and_debug() {
        assert_eq!(p("if __debug__:\n    pass\n"), (false, true));
        assert_eq!(p("x = f'{__debug__}'\n"), (false, true));
        assert_eq!(p("x = 'assert'  # assert in text only\n"), (true, true));
        assert_eq!(p("self.assertEqual(a, b)\n"), (true, true));
        assert_eq!(p("def f():\n    assert x, 'msg'\n"), (false, true));
    }

    #[test]
    fn unsure_means_every_level() {
        assert_eq!(predict(b"x = '\xe9'\n").same, Same::nothing(), "not UTF-8");
        assert_eq!(
            predict(b"# -*- coding: latin-1 -*-\nx = 1\n").same,
            Same::nothing()
        );
        assert_eq!(predict(b"x = 'unterminated\n").same, Same::nothing());
        assert_eq!(predict(b"x = (1\n").same, Same::nothing());
        assert_eq!(predict(b"x = $\n").same, Same::nothing());
        assert_eq!(predict(b"x = 1 \\ y\n").same, Same::nothing());
    }

    #[test]
    fn strings_hide_everything_inside() {
        assert_eq!(p("x = '''\nassert 1\n\"\"\"doc\"\"\"\n'''\n"), (true, true));
        assert_eq!(p("x = \"a\\\"assert\"\n"), (true, true));
        assert_eq!(p("x = rb'\\\\'\nassert y\n"), (false, true));
        assert_eq!(p("x = f\"{d['k']}\"\n"), (true, true));
        assert_eq!(p("x = 1 + \\\n  2\n'late doc?'\n"), (true, false));
    }
}
