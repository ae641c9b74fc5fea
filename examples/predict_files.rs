//! Print the prediction for each file given (or each `.py` under a directory): bits and the
//! non-ASCII-name flag, one line per file. A debugging aid for the scan.
fn main() {
    for arg in std::env::args_os().skip(1) {
        for e in walkdir::WalkDir::new(&arg)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
        {
            if e.file_type().is_file() && e.path().extension() == Some("py".as_ref()) {
                let src = std::fs::read(e.path()).unwrap_or_default();
                let p = pyclink::python::predict::predict(&src);
                println!(
                    "{}\t{}\t{}",
                    e.path().display(),
                    p.same.bits(),
                    u8::from(p.non_ascii_names)
                );
            }
        }
    }
}
