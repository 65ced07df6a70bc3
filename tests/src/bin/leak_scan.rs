//! After the suite: fail if any recorded secret appears in any captured log line or
//! status/Event text (see `stashless_tests::leaks`). Usage: `leak_scan <dir>`.

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: leak_scan <STASHLESS_LEAK_DIR>");
        return std::process::ExitCode::from(2);
    };
    let s = match stashless_tests::leaks::scan(std::path::Path::new(&dir)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leak_scan: reading {}: {e}", dir.to_string_lossy());
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "leak scan: {} secrets looked for in {} files, {} lines",
        s.secrets, s.files, s.lines
    );
    if s.secrets == 0 || s.lines == 0 {
        eprintln!("leak scan: nothing was captured; is STASHLESS_LEAK_DIR passed to the tests?");
        return std::process::ExitCode::FAILURE;
    }
    if s.findings.is_empty() {
        println!("leak scan: no secret found in any log line or status/Event text");
        return std::process::ExitCode::SUCCESS;
    }
    for f in &s.findings {
        eprintln!("LEAK: {} line {}: {}", f.file, f.line, f.kind);
    }
    eprintln!("leak scan: {} leaks", s.findings.len());
    std::process::ExitCode::FAILURE
}
