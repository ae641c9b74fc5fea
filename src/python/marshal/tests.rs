//! Hand-made marshal data. Each fixture is spelled with the builders below so the bytes can be
//! read: `z("a")` is a short ASCII string, `f(..)` sets FLAG_REF on an object, `r(n)` is a
//! reference, `t(..)` a small tuple.

use super::*;

/// CPython 3.`minor`'s marshal format, as the version table gives it.
fn fmt(minor: u32) -> Format {
    crate::python::table::facts(crate::python::PyVersion::cpython(3, minor))
        .and_then(|f| f.marshal)
        .unwrap()
}

const V: Format = Format {
    layout: CodeLayout::Py311,
    slices: false,
    frozendicts: false,
};

fn z(s: &str) -> Vec<u8> {
    let mut v = vec![b'z', s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn zi(s: &str) -> Vec<u8> {
    let mut v = z(s);
    v[0] = b'Z';
    v
}

fn u(s: &[u8]) -> Vec<u8> {
    let mut v = vec![b'u'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s);
    v
}

fn int(i: i32) -> Vec<u8> {
    let mut v = vec![b'i'];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

fn f(mut obj: Vec<u8>) -> Vec<u8> {
    obj[0] |= 0x80;
    obj
}

fn r(n: u32) -> Vec<u8> {
    let mut v = vec![b'r'];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn t(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![b')', items.len() as u8];
    for i in items {
        v.extend_from_slice(i);
    }
    v
}

fn le(i: u32) -> Vec<u8> {
    i.to_le_bytes().to_vec()
}

/// A 3.11 code object with the given constants, file name and name (other fields minimal).
fn code311(consts: Vec<u8>, filename: Vec<u8>, name: Vec<u8>, firstlineno: u32) -> Vec<u8> {
    let mut v = vec![b'c'];
    for i in [0u32, 0, 0, 1, 0] {
        v.extend(le(i)); // argcount posonlyargcount kwonlyargcount stacksize flags
    }
    v.extend([b's', 2, 0, 0, 0, 0x97, 0]); // co_code
    v.extend(consts);
    v.extend(t(&[])); // names
    v.extend(t(&[])); // localsplusnames
    v.extend([b's', 0, 0, 0, 0]); // localspluskinds
    v.extend(filename);
    v.extend(name.clone()); // name
    v.extend(name); // qualname
    v.extend(le(firstlineno));
    v.extend([b's', 0, 0, 0, 0]); // linetable
    v.extend([b's', 0, 0, 0, 0]); // exceptiontable
    v
}

/// The same for 3.8-3.10.
fn code38(consts: Vec<u8>, filename: Vec<u8>, name: Vec<u8>, firstlineno: u32) -> Vec<u8> {
    let mut v = vec![b'c'];
    for i in [0u32, 0, 0, 0, 1, 0x40] {
        v.extend(le(i)); // argcount posonly kwonly nlocals stacksize flags
    }
    v.extend([b's', 2, 0, 0, 0, 0x64, 0]);
    v.extend(consts);
    v.extend(t(&[])); // names
    v.extend(t(&[])); // varnames
    v.extend(t(&[])); // freevars
    v.extend(t(&[])); // cellvars
    v.extend(filename);
    v.extend(name);
    v.extend(le(firstlineno));
    v.extend([b's', 0, 0, 0, 0]); // linetable
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn norm(data: &[u8]) -> Vec<u8> {
    norm_as(data, V)
}

fn norm15(data: &[u8]) -> Vec<u8> {
    norm_as(data, fmt(15))
}

fn norm_as(data: &[u8], format: Format) -> Vec<u8> {
    let out = normalize(data, format).unwrap_or_else(|e| panic!("{e}: {data:02x?}"));
    let again = normalize(&out, format).unwrap();
    assert!(
        matches!(again, Cow::Borrowed(_)),
        "not idempotent: {out:02x?} became {again:02x?}"
    );
    out.into_owned()
}

fn assert_normal(data: &[u8]) {
    assert!(matches!(normalize(data, V).unwrap(), Cow::Borrowed(_)));
    assert!(is_normal(data, V).unwrap());
}

#[test]
fn a_used_reference_to_a_string_is_kept() {
    assert_normal(&t(&[f(z("ab")), r(0)]));
}

#[test]
fn a_reference_to_a_tuple_is_kept() {
    assert_normal(&t(&[f(t(&[int(1)])), r(0)]));
}

#[test]
fn an_unused_flag_is_cleared() {
    assert_eq!(norm(&t(&[f(z("a"))])), t(&[z("a")]));
    assert!(!is_normal(&t(&[f(z("a"))]), V).unwrap());
}

#[test]
fn clearing_an_unused_flag_renumbers_later_references() {
    let input = t(&[f(z("a")), f(z("b")), r(1)]);
    assert_eq!(norm(&input), t(&[z("a"), f(z("b")), r(0)]));
}

#[test]
fn nested_references_are_renumbered_in_start_order() {
    // The outer tuple's flag is unused; the string inside it becomes reference 0.
    let input = f(t(&[f(z("a")), r(1)]));
    assert_eq!(norm(&input), t(&[f(z("a")), r(0)]));
}

#[test]
fn equal_strings_written_twice_become_one_object() {
    assert_eq!(norm(&t(&[z("ab"), z("ab")])), t(&[f(z("ab")), r(0)]));
}

#[test]
fn strings_of_different_kinds_stay_apart() {
    assert_normal(&t(&[z("ab"), zi("ab")]));
    assert_normal(&t(&[z("ab"), u(b"ab")]));
}

#[test]
fn equal_tuples_are_shared_whole() {
    let input = t(&[t(&[z("a")]), t(&[z("a")])]);
    assert_eq!(norm(&input), t(&[f(t(&[z("a")])), r(0)]));
}

#[test]
fn references_are_seen_through_when_comparing() {
    // ('a',) then (ref 'a',) then ref 'a': the second tuple equals the first.
    let input = t(&[t(&[f(z("a"))]), t(&[r(0)]), r(0)]);
    let want = t(&[f(t(&[f(z("a"))])), r(0), r(1)]);
    assert_eq!(norm(&input), want);
}

#[test]
fn a_reference_inside_a_shared_subtree_still_resolves() {
    // The second tuple registers its own copy of 'a' as reference 1; after sharing, that
    // copy is gone and the last reference must point at the first 'a'.
    let t1 = t(&[f(z("a")), r(0)]);
    let t2 = t(&[f(z("a")), r(1)]);
    let input = t(&[t1, t2, r(1)]);
    let want = t(&[f(t(&[f(z("a")), r(1)])), r(0), r(1)]);
    assert_eq!(norm(&input), want);
}

#[test]
fn singletons_are_never_flagged_nor_shared() {
    assert_eq!(
        norm(&t(&[f(vec![b'N']), vec![b'N']])),
        t(&[vec![b'N'], vec![b'N']])
    );
    // marshal.loads registers no reference for a flagged None, so this refers to nothing.
    assert!(matches!(
        normalize(&t(&[f(vec![b'N']), r(0)]), V),
        Err(Error::BadRef { index: 0, .. })
    ));
}

#[test]
fn a_reference_may_be_longer_than_what_it_replaces() {
    // Two empty strings (2 bytes each): the second becomes a 5-byte reference, as add-det
    // writes it.
    assert_eq!(norm(&t(&[z(""), z("")])), t(&[f(z("")), r(0)]));
}

#[test]
fn ints_floats_and_longs_are_shared_by_value() {
    let long = vec![b'l', 2, 0, 0, 0, 1, 0, 1, 0];
    let float = cat(&[vec![b'g'], 1.5f64.to_le_bytes().to_vec()]);
    let input = t(&[
        int(7),
        long.clone(),
        float.clone(),
        int(7),
        long.clone(),
        float.clone(),
    ]);
    assert_eq!(
        norm(&input),
        t(&[f(int(7)), f(long), f(float), r(0), r(1), r(2)])
    );
    // -0.0 and 0.0 differ.
    let zero = cat(&[vec![b'g'], 0.0f64.to_le_bytes().to_vec()]);
    let minus = cat(&[vec![b'g'], (-0.0f64).to_le_bytes().to_vec()]);
    assert_normal(&t(&[zero, minus]));
}

#[test]
fn dicts_sets_and_lists_are_walked() {
    let dict = cat(&[vec![b'{'], z("k"), z("k"), vec![b'0']]);
    assert_eq!(norm(&dict), cat(&[vec![b'{'], f(z("k")), r(0), vec![b'0']]));
    let set = cat(&[vec![b'>'], le(2), int(1), int(2)]);
    let list = cat(&[vec![b'['], le(1), set.clone()]);
    assert_eq!(
        norm(&t(&[set.clone(), list])),
        t(&[f(set.clone()), cat(&[vec![b'['], le(1), r(0)])])
    );
    // A large tuple and a small one with the same items have different type codes: only
    // the int inside is shared.
    let big = cat(&[vec![b'('], le(1), int(1)]);
    let want = t(&[cat(&[vec![b'('], le(1), f(int(1))]), t(&[r(0)])]);
    assert_eq!(norm(&t(&[big, t(&[int(1)])])), want);
}

#[test]
fn code_objects_are_walked_per_version() {
    // 3.11: the outer code's file name refers to the inner one's, read before it.
    let path = b"/usr/lib/python3.11/m.py";
    let inner = code311(t(&[vec![b'N']]), f(u(path)), zi("g"), 3);
    let outer = code311(t(&[inner, vec![b'N']]), r(0), zi("<module>"), 1);
    let codes = code_objects(&outer, V).unwrap();
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[0].offset, 0);
    assert_eq!(codes[0].filename.bytes, path);
    assert_eq!(codes[0].filename.type_code, b'u');
    assert_eq!(codes[0].name.bytes, b"<module>");
    assert_eq!(codes[0].qualname.unwrap().bytes, b"<module>");
    assert_eq!(codes[0].firstlineno, 1);
    assert_eq!(codes[1].filename.bytes, path);
    assert_eq!(codes[1].name.bytes, b"g");
    assert_eq!(codes[1].firstlineno, 3);
    // Each name is written twice (co_name, co_qualname): the normal form shares it, and the
    // code objects read the same from it.
    let n = norm(&outer);
    assert_ne!(n, outer);
    let again = code_objects(&n, V).unwrap();
    fn strip<'a>(c: &[CodeInfo<'a>]) -> Vec<(MarshalStr<'a>, MarshalStr<'a>, i32)> {
        c.iter()
            .map(|c| (c.filename, c.name, c.firstlineno))
            .collect()
    }
    assert_eq!(strip(&again), strip(&codes));

    // 3.8 layout, nested code whose file name refers to the outer one's.
    let inner = code38(t(&[vec![b'N']]), r(0), zi("f"), 2);
    let outer = code38(
        t(&[inner, vec![b'N']]),
        f(u(b"/p/m\xed\xb2\x80.py")),
        zi("<module>"),
        1,
    );
    // The outer file name starts after its consts, so the inner reference is invalid...
    assert!(code_objects(&outer, fmt(8)).is_err());
    // ...but a reference from a later sibling field works.
    let outer = {
        let mut v = code38(
            t(&[vec![b'N']]),
            f(u(b"/p/m\xed\xb2\x80.py")),
            zi("<module>"),
            1,
        );
        v.truncate(v.len() - 5);
        // Replace the empty linetable with a nested code that refers to the file name.
        v.extend(code38(t(&[]), r(0), zi("g"), 9));
        v
    };
    let codes = code_objects(&outer, fmt(8)).unwrap();
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[0].name.bytes, b"<module>");
    assert!(codes[0].offset < codes[1].offset);
    assert_eq!(codes[1].filename, codes[0].filename);
    assert_eq!(codes[1].firstlineno, 9);
    assert_eq!(codes[1].qualname, None);
    assert_eq!(&*codes[0].filename.fs_bytes(), b"/p/m\x80.py");
    assert_eq!(
        codes[0].filename.to_string_lossy(),
        "/p/m\u{FFFD}\u{FFFD}\u{FFFD}.py"
    );
    // The same bytes read with the 3.11 layout are something else.
    assert!(code_objects(&outer, fmt(11)).is_err());
}

#[test]
fn a_code_field_that_is_not_a_string_is_an_error_for_the_visitor_only() {
    let c = code311(t(&[]), vec![b'N'], zi("<module>"), 1);
    assert!(normalize(&c, V).is_ok());
    assert!(matches!(
        code_objects(&c, V),
        Err(Error::NotAString {
            field: "co_filename",
            ..
        })
    ));
}

#[test]
fn corrupt_inputs_are_typed_errors() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (vec![], |e| matches!(e, Error::Truncated { offset: 0, .. })),
        (vec![b'z', 5, b'a', b'b'], |e| {
            matches!(
                e,
                Error::Truncated {
                    offset: 2,
                    needed: 3
                }
            )
        }),
        (vec![b'i', 1, 2], |e| matches!(e, Error::Truncated { .. })),
        (vec![b'?'], |e| {
            matches!(e, Error::UnknownType { code: b'?', .. })
        }),
        (t(&[vec![b'Q']]), |e| {
            matches!(
                e,
                Error::UnknownType {
                    offset: 2,
                    code: b'Q'
                }
            )
        }),
        (vec![b':', b'N', b'N', b'N'], |e| {
            matches!(e, Error::UnknownType { code: b':', .. })
        }),
        (r(5), |e| {
            matches!(
                e,
                Error::BadRef {
                    index: 5,
                    registered: 0,
                    ..
                }
            )
        }),
        (f(t(&[r(0)])), |e| {
            matches!(e, Error::RecursiveRef { index: 0, .. })
        }),
        (vec![b'N', b'N'], |e| {
            matches!(
                e,
                Error::TrailingBytes {
                    offset: 1,
                    count: 1
                }
            )
        }),
        (t(&[vec![b'0']]), |e| matches!(e, Error::Null { offset: 2 })),
        (cat(&[vec![b'('], le(u32::MAX)]), |e| {
            matches!(e, Error::BadSize { size: -1, .. })
        }),
        (cat(&[vec![b'('], le(1000)]), |e| {
            matches!(e, Error::Truncated { .. })
        }),
        (cat(&[vec![b'u'], le(0x7fff_ffff)]), |e| {
            matches!(e, Error::Truncated { .. })
        }),
        (vec![b'l', 1, 0, 0, 0, 0, 0], |e| {
            matches!(e, Error::BadLong { offset: 1 })
        }),
        (vec![b'l', 1, 0, 0, 0, 0, 0x80], |e| {
            matches!(e, Error::BadLong { .. })
        }),
        (vec![b'l', 0, 0, 0, 0x80], |e| {
            matches!(e, Error::Truncated { .. })
        }),
        (cat(&[vec![b'{'], z("k"), vec![b'0']]), |e| {
            matches!(e, Error::Null { .. })
        }),
    ];
    for (data, check) in cases {
        let e = normalize(&data, V).expect_err(&format!("{data:02x?}"));
        assert!(check(&e), "{data:02x?}: {e:?}");
        assert!(!e.to_string().is_empty());
    }
    // Slices exist from 3.14 on, frozendicts from 3.15 on.
    assert!(normalize(b":NNN", fmt(14)).is_ok());
    assert!(matches!(
        normalize(b":NNN", fmt(13)),
        Err(Error::UnknownType { code: b':', .. })
    ));
    let fd = cat(&[vec![b'}'], z("k"), int(1), vec![b'0']]);
    assert!(normalize(&fd, fmt(15)).is_ok());
    assert!(matches!(
        normalize(&fd, fmt(14)),
        Err(Error::UnknownType { code: b'}', .. })
    ));
    // Two equal frozendicts are one object in the normal form, flagged where it starts; a
    // frozendict that refers to itself cannot be loaded.
    let two = t(&[fd.clone(), fd.clone()]);
    assert_eq!(norm15(&two), t(&[f(fd.clone()), r(0)]));
    let looped = cat(&[vec![b'}' | 0x80], vec![b'N'], r(0), vec![b'0']]);
    assert!(matches!(
        normalize(&looped, fmt(15)),
        Err(Error::RecursiveRef { .. })
    ));
}

#[test]
fn nesting_is_bounded_like_marshal_loads() {
    let nest = |depth: usize| {
        let mut v = Vec::new();
        for _ in 1..depth {
            v.extend([b')', 1]);
        }
        v.push(b'N');
        v
    };
    assert!(normalize(&nest(MAX_DEPTH), V).is_ok());
    assert!(matches!(
        normalize(&nest(MAX_DEPTH + 1), V),
        Err(Error::TooDeep { .. })
    ));
    assert!(matches!(
        normalize(&nest(1_000_000), V),
        Err(Error::TooDeep { .. })
    ));
}

#[test]
fn whole_pycs_keep_their_header() {
    let mut pyc = vec![0xa7, 0x0d, b'\r', b'\n'];
    pyc.extend([1u8; 12]);
    pyc.extend(t(&[f(z("a"))]));
    let out = normalize_pyc(&pyc).unwrap();
    assert_eq!(&out[..16], &pyc[..16]);
    assert_eq!(&out[16..], &t(&[z("a")])[..]);
    assert!(matches!(normalize_pyc(&out).unwrap(), Cow::Borrowed(_)));
    assert!(matches!(
        normalize_pyc(&pyc[..10]),
        Err(Error::ShortHeader { .. })
    ));
    assert!(matches!(
        normalize_pyc(b"\x03\xf3\r\nxxxx"),
        Err(Error::UnknownMagic(_))
    ));
}

#[test]
fn a_normalizer_is_reusable() {
    let mut n = Normalizer::new();
    let a = t(&[z("ab"), z("ab")]);
    let b = t(&[f(int(1)), f(int(2)), r(1)]);
    for _ in 0..3 {
        assert_eq!(
            n.normalize(&a, V).unwrap().into_owned(),
            t(&[f(z("ab")), r(0)])
        );
        assert_eq!(
            n.normalize(&b, V).unwrap().into_owned(),
            t(&[int(1), f(int(2)), r(0)])
        );
        assert!(n.normalize(b"?", V).is_err());
    }
}
