//! `cargo xtask bench`: benches/engine.rs, profiled vs pprof-rs 0.15 vs no profiler, three
//! times: built as users build tests (dev profile), with the symbolizer's crates optimised
//! as README recommends for faster first profiles, and as a release build with debug info
//! (a big optimised binary: ~38 MB with its dependencies, inlining across codegen units).

use std::path::Path;
use std::process::Command;

/// Crates whose speed a profile's symbolization and encoding depend on.
pub const OPTIMISED: &[&str] = &["gimli", "object", "miniz_oxide", "profiled"];

pub fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let plain = ["bench", "--quiet", "--bench", "engine", "--profile", "dev"];
    // As users' dev builds are: the workspace's manifest gives its own dependencies line
    // tables only, for build speed.
    let full_debug = [
        "--config".to_string(),
        r#"profile.dev.package."*".debug=2"#.into(),
    ];
    println!("## dev profile, as users build tests\n");
    let target = root.join("target/bench-dev");
    let dev = [
        &full_debug[..],
        &["--target-dir".into(), target.display().to_string()],
    ]
    .concat();
    cargo(root, &plain, &dev)?;
    println!("\n## dev profile with README's opt-level override for the symbolizer's crates\n");
    let mut overrides: Vec<String> = full_debug.to_vec();
    for krate in OPTIMISED {
        overrides.push("--config".into());
        overrides.push(format!("profile.dev.package.{krate}.opt-level=3"));
    }
    let target = root.join("target/bench-optimised-deps");
    overrides.push("--target-dir".into());
    overrides.push(target.display().to_string());
    cargo(root, &plain, &overrides)?;
    println!("\n## release profile with `debug = true`: a big optimised binary\n");
    let release = [
        "bench",
        "--quiet",
        "--bench",
        "engine",
        "--profile",
        "release",
    ];
    let target = root.join("target/bench-release-debug");
    cargo(
        root,
        &release,
        &[
            "--config".into(),
            "profile.release.debug=true".into(),
            "--target-dir".into(),
            target.display().to_string(),
        ],
    )
}

fn cargo(root: &Path, args: &[&str], extra: &[String]) -> Result<(), String> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(&args[..1])
        .args(extra)
        .args(&args[1..])
        .env_remove("PROFILE")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed: {status}", args.join(" ")))
    }
}
