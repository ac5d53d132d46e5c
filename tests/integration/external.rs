//! Suites that run outside Rust but belong to `cargo test`: the console in a
//! real browser (Node's test runner, playwright-core, Debian's Chromium), the
//! OpenAPI conformance run (schemathesis), and the Python (PyJWT) and Node
//! (jose) verification examples against a live issuer. Each drives the binary built
//! for this test run. When a tool they need is missing they fail and say
//! what to install (`.ci/run` installs all of it); they never skip.

use std::path::Path;
use std::process::Command;

fn run_suite(script: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(script);
    assert!(path.exists(), "{script} is missing");
    let output = Command::new("bash")
        .arg(&path)
        .env("LATCHKEY_BIN", env!("CARGO_BIN_EXE_latchkey"))
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
         It needs Node 20+ with npm, Debian's `chromium` and Python 3 with pip and venv; .ci/run installs them.",
        output.status
    );
    // Echo the suite's own summary into the test output.
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("# ") || l.contains("passed") || l.contains("failed"))
    {
        println!("{line}");
    }
}

#[test]
fn console_in_a_real_browser() {
    run_suite("tests/browser/run.sh");
}

#[test]
fn openapi_conformance_with_schemathesis() {
    run_suite("tests/conformance/run.sh");
}

#[test]
fn python_example_against_a_live_issuer() {
    run_suite("examples/python/test.sh");
}

#[test]
fn node_example_against_a_live_issuer() {
    run_suite("examples/node/test.sh");
}
