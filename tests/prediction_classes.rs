//! Issue 12: level prediction read some sources differently from CPython and called levels
//! identical that are not, so pyclink hardlinked wrong pycs. Every class of misreading found is
//! here as an example, checked two ways on every installed version:
//!
//! - each example is compiled at levels 0, 1 and 2 by the interpreter: a pair predicted
//!   identical must be deeply equal, and the example must really compile and differ as stated
//!   (so that it tests something);
//! - pyclink itself compiles them in a build root: every written pyc must be deeply equal to a
//!   fresh `compile(source, dfile, 'exec', optimize=L)`, levels that differ must not be
//!   hardlinked, and pyc-audit must agree.

mod common;
mod levels;

use common::*;
use levels::{check_levels, interpreters, Outcome, SAME};

/// How an example's levels really differ, on every version from `since` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Differs {
    /// Level 1 differs from level 0 (an `assert` or `__debug__`); 1 and 2 are equal.
    Level1,
    /// Level 2 differs from level 1 (a docstring); 0 and 1 are equal.
    Level2,
    /// All three are equal (the scan may still be unsure).
    Neither,
}

struct Example {
    name: &'static str,
    src: &'static [u8],
    /// The first minor version of 3.x that compiles it.
    since: u32,
    differs: Differs,
}

const fn ex(name: &'static str, src: &'static [u8], since: u32, differs: Differs) -> Example {
    Example {
        name,
        src,
        since,
        differs,
    }
}

use Differs::*;

/// The classes, each with a one-line example (see src/python/predict.rs for the rules).
const EXAMPLES: &[Example] = &[
    // NFKC: CPython normalizes identifiers, so these are `__debug__`.
    ex(
        "fullwidth",
        "DEBUG = __\u{ff44}ebug__\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "fullwidth_low_line",
        "DEBUG = _\u{ff3f}debug__\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "dashed_low_line",
        "DEBUG = __debug_\u{fe4d}\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "math_bold",
        "DEBUG = __\u{1d41d}ebug__\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "modifier_letter",
        "DEBUG = __\u{1d48}e\u{1d47}ug__\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "fstring_field",
        "x = f'{__\u{ff44}ebug__}'\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "fstring_spec",
        "x = f'{1:{__\u{ff44}ebug__}}'\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "lambda",
        "f = lambda: __\u{ff44}ebug__\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "comprehension",
        "y = [__\u{ff44}ebug__ for _ in ()]\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "decorator",
        "@dec(__\u{ff44}ebug__)\ndef f(): pass\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "default",
        "def f(a=__\u{ff44}ebug__): pass\n".as_bytes(),
        6,
        Level1,
    ),
    ex(
        "match_guard",
        "match x:\n    case 1 if __\u{ff44}ebug__:\n        pass\n".as_bytes(),
        10,
        Level1,
    ),
    ex(
        "nested_fstring",
        "x = f\"{f\"{__\u{ff44}ebug__}\"}\"\n".as_bytes(),
        12,
        Level1,
    ),
    // `ａssert` is a name, never the keyword: levels equal (the scan counts it anyway).
    ex(
        "nfkc_assert_is_a_name",
        "\u{ff41}ssert = 1\n".as_bytes(),
        6,
        Neither,
    ),
    // A lone `\r` ends a line (and a comment) as `\n` does.
    ex("cr_ends_comment", b"x = 1  # c\rassert x\n", 6, Level1),
    ex(
        "cr_ends_comment_doc",
        b"def f():  # c\r    'doc'\n",
        6,
        Level2,
    ),
    ex("cr_lines", b"x = 1\rassert x\r", 6, Level1),
    ex("cr_continuation", b"x = 1 + \\\r2\rassert x\r", 6, Level1),
    ex("crlf_doc", b"'''doc'''\r\nx = 1\r\n", 6, Level2),
    // PEP 701: a field holds strings in the enclosing quotes.
    ex(
        "pep701_hides_assert",
        b"x = f\"{\"'''\"}\"\nassert x\n# '''\n",
        12,
        Level1,
    ),
    ex(
        "pep701_hides_docstring",
        b"x = f\"{\"'''\"}\"\ndef f():\n    \"doc\"\n# '''\n",
        12,
        Level2,
    ),
    ex(
        "pep701_backslash",
        b"x = f'{\"\\n\".join(y)}'\nassert z\n",
        12,
        Level1,
    ),
    ex("fstring_double_braces", b"x = f'{{'; assert y\n", 6, Level1),
    ex(
        "fstring_quote_in_spec",
        b"x = f\"{y:'^10}\"; assert z\n",
        6,
        Level1,
    ),
    // Escapes, prefixes, statement shapes.
    ex("escaped_quote", b"x = 'a\\'' ; assert y\n", 6, Level1),
    ex("raw_escaped_quote", b"x = r'\\'' ; assert y\n", 6, Level1),
    ex("prefix_docstring", b"def f():\n    R'''doc'''\n", 6, Level2),
    ex(
        "bytes_is_no_docstring",
        b"def f():\n    rb'doc'\n",
        6,
        Neither,
    ),
    ex("form_feed", b"\x0cdef f():\n\x0c    'doc'\n", 6, Level2),
    ex("tabs", b"if x:\n\tassert y\n", 6, Level1),
    ex(
        "parenthesized_doc",
        b"def f():\n    ('a'\n     'b')\n",
        6,
        Level2,
    ),
    ex("one_line_class_doc", b"class A: 'doc'\n", 6, Level2),
    ex("continued_doc", b"def f():\\\n    'doc'\n", 6, Level2),
    ex("decorated_doc", b"@dec\nclass A:\n    'doc'\n", 6, Level2),
    ex("semicolon_assert", b"x = 1;assert y\n", 6, Level1),
    ex("ellipsis_assert", b"def f(): ...\nassert x\n", 6, Level1),
    ex(
        "match_body_assert",
        b"match x:\n    case [a, *_] if a:\n        assert a\n",
        10,
        Level1,
    ),
    ex("number_glued_to_name", b"x = 1if y else 2\n", 6, Neither),
    ex("bom_doc", b"\xef\xbb\xbf'''doc'''\n", 6, Level2),
    ex(
        "utf8_cookie",
        "# -*- coding: utf-8 -*-\nx = '\u{e4}'\n".as_bytes(),
        6,
        Neither,
    ),
    ex(
        "non_ascii_field_name",
        "x = f'{\u{e4}}'\n".as_bytes(),
        6,
        Neither,
    ),
];

fn minor(version: &str) -> u32 {
    version.split('.').nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_example_is_predicted_safely_on_every_version() {
    let work = tempfile::tempdir().unwrap();
    let sources: Vec<Vec<u8>> = EXAMPLES.iter().map(|e| e.src.to_vec()).collect();
    let mut problems = Vec::new();
    for py in interpreters("prediction_classes") {
        let outcomes = check_levels(&py.python, &sources, work.path());
        let mut checked = 0;
        for (e, outcome) in EXAMPLES.iter().zip(&outcomes) {
            let same = pyclink::python::predict::predict(e.src).same;
            let (eq01, eq12) = match outcome {
                Outcome::Levels { eq01, eq12 } => (*eq01, *eq12),
                other if minor(&py.version) >= e.since => {
                    problems.push(format!("python{}: {}: {other:?}", py.version, e.name));
                    continue;
                }
                _ => continue,
            };
            checked += 1;
            if same.level1_is_level0() && !eq01 || same.level2_is_level1() && !eq12 {
                problems.push(format!(
                    "python{}: {}: predicted {same:?}, but levels equal: 0/1 {eq01}, 1/2 {eq12}",
                    py.version, e.name
                ));
            }
            let expected = match e.differs {
                Level1 => (false, true),
                Level2 => (true, false),
                Neither => (true, true),
            };
            if (eq01, eq12) != expected {
                problems.push(format!(
                    "python{}: {}: levels equal 0/1 {eq01}, 1/2 {eq12}; the example says {:?}",
                    py.version, e.name, e.differs
                ));
            }
        }
        println!(
            "prediction classes python{}: {checked} of {} examples compiled and checked",
            py.version,
            EXAMPLES.len()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Reads back every pyc pyclink wrote for the sources listed in argv[1] (path TAB dfile) and
/// compares it with a fresh compile of the source at that level. Prints one line per source:
/// dfile, per level whether the pyc is right, then whether levels 0/1 and 1/2 are deeply equal.
const READ_BACK: &str = r#"
import importlib.util, marshal, sys, warnings
warnings.simplefilter('ignore')
header = 16 if sys.version_info >= (3, 7) else 12
for line in open(sys.argv[1], encoding='utf-8').read().splitlines():
    path, dfile = line.split('\t')
    src = open(path, 'rb').read()
    fresh = [compile(src, dfile, 'exec', dont_inherit=True, optimize=l) for l in (0, 1, 2)]
    right = []
    for level in (0, 1, 2):
        pyc = importlib.util.cache_from_source(path, optimization='' if level == 0 else level)
        data = open(pyc, 'rb').read()
        right.append(int(data[:4] == importlib.util.MAGIC_NUMBER
                         and same(marshal.loads(data[header:]), fresh[level])))
    print(dfile, *right, int(same(fresh[0], fresh[1])), int(same(fresh[1], fresh[2])))
"#;

/// The root-relative site-packages of a version (`pypy3.9`'s tree is `usr/lib/pypy3.9`).
fn site(version: &str) -> String {
    match version.starts_with("pypy") {
        true => format!("usr/lib/{version}/site-packages/dbg"),
        false => format!("usr/lib/python{version}/site-packages/dbg"),
    }
}

#[test]
fn pyclink_writes_and_links_only_what_cpython_compiles_alike() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let pythons = interpreters("prediction_classes_e2e");
    let mut cmd = pyclink();
    cmd.arg("--buildroot").arg(&root).args(["-j", "2"]);
    let mut expects = Vec::new();
    let mut audit_pythons = Vec::new();
    for py in &pythons {
        let dir = root.join(site(&py.version));
        std::fs::create_dir_all(&dir).unwrap();
        for e in EXAMPLES.iter().filter(|e| minor(&py.version) >= e.since) {
            std::fs::write(dir.join(format!("{}.py", e.name)), e.src).unwrap();
        }
        // What really is identical must still be linked.
        std::fs::write(dir.join("plain.py"), "x = 1\n").unwrap();
        cmd.arg("--interpreter")
            .arg(format!("{}={}", py.version, py.python.display()));
        expects.push(format!("{}:{}", py.version, site(&py.version)));
        audit_pythons.push(format!("--python={}={}", py.version, py.python.display()));
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "pyclink failed:\n{}", stderr(&out));

    let mut problems = Vec::new();
    let script = t.path().join("read_back.py");
    std::fs::write(&script, format!("{SAME}{READ_BACK}")).unwrap();
    for py in &pythons {
        let dir = root.join(site(&py.version));
        let tag = cache_tag(&py.python);
        let mut names: Vec<&str> = EXAMPLES
            .iter()
            .filter(|e| minor(&py.version) >= e.since)
            .map(|e| e.name)
            .collect();
        names.push("plain");
        let list: String = names
            .iter()
            .map(|n| {
                format!(
                    "{}\t/{}/{n}.py\n",
                    dir.join(format!("{n}.py")).display(),
                    site(&py.version)
                )
            })
            .collect();
        let list_file = t.path().join(format!("read-back-{}.tsv", py.version));
        std::fs::write(&list_file, list).unwrap();
        let out = run(std::process::Command::new(&py.python)
            .arg("-I")
            .arg(&script)
            .arg(&list_file));
        assert!(
            out.status.success(),
            "read-back failed on {}:\n{}",
            py.python.display(),
            stderr(&out)
        );
        let text = stdout(&out);
        let mut linked_pairs = 0;
        let problems_before = problems.len();
        for (line, name) in text.lines().zip(&names) {
            let f: Vec<&str> = line.split(' ').collect();
            let [_, r0, r1, r2, eq01, eq12] = f[..] else {
                panic!("bad read-back line: {line}")
            };
            if [r0, r1, r2] != ["1", "1", "1"] {
                problems.push(format!(
                    "python{}: {name}: a pyc is not what compile() gives (levels 0,1,2 right: {r0} {r1} {r2})",
                    py.version
                ));
            }
            let p = pycs(&dir, name, &tag);
            for (a, b, eq) in [(0, 1, eq01), (1, 2, eq12)] {
                let linked = ino(&p[a]) == ino(&p[b]);
                linked_pairs += usize::from(linked);
                if linked && eq != "1" {
                    problems.push(format!(
                        "python{}: {name}: levels {a} and {b} differ but are hardlinked",
                        py.version
                    ));
                }
            }
        }
        assert_eq!(text.lines().count(), names.len(), "python{}", py.version);
        // `plain` and the Neither examples prove that linking still happens.
        assert!(
            linked_pairs >= 2,
            "python{}: nothing was linked",
            py.version
        );
        println!(
            "prediction classes e2e python{}: {} sources, {} problems, {linked_pairs} level pairs \
             hardlinked",
            py.version,
            names.len(),
            problems.len() - problems_before
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let extra: Vec<&str> = audit_pythons.iter().map(String::as_str).collect();
    assert_audit_ok(&root, &expects, &extra);
}
