//! Builds and runs the fixture crate's test binaries, and reads the profiles they write.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profiled::pprof::proto::Profile;

/// All fixture builds share one target dir beside ours, so each is compiled once per run.
pub fn fixture_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("fixtures")
}

pub fn fixture_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/Cargo.toml")
}

/// `cargo test --test <target> -- <args>` in the fixture crate, with `env` (and without any
/// PROFILE inherited from the caller).
pub fn cargo_test(target: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("test")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(fixture_manifest())
        .arg("--test")
        .arg(target)
        .arg("--")
        .args(args)
        .env("CARGO_TARGET_DIR", fixture_target())
        .env_remove("PROFILE")
        .env_remove("RUST_TEST_THREADS")
        .env_remove("FIXTURE_OUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cargo runs");
    eprintln!(
        "--- cargo test --test {target} {args:?} {env:?}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A decoded profile with helpers that speak in CPU time.
pub struct Read {
    pub profile: Profile,
    pub path: PathBuf,
}

pub fn read(path: &Path) -> Read {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Read {
        profile: profiled::pprof::decode(&bytes).expect("valid pprof"),
        path: path.into(),
    }
}

impl Read {
    fn s(&self, i: i64) -> &str {
        &self.profile.string_table[i as usize]
    }

    /// Function names of a sample's stack, leaf first, inlined frames included.
    pub fn stack(&self, sample: &profiled::pprof::proto::Sample) -> Vec<&str> {
        let p = &self.profile;
        let mut names = Vec::new();
        for id in &sample.location_id {
            let loc = p
                .location
                .iter()
                .find(|l| l.id == *id)
                .expect("location exists");
            for line in &loc.line {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .expect("function");
                names.push(self.s(f.name));
            }
        }
        names
    }

    /// Total CPU nanoseconds (the second sample value).
    pub fn cpu_ns(&self) -> i64 {
        self.profile.sample.iter().map(|s| s.value[1]).sum()
    }

    pub fn samples(&self) -> i64 {
        self.profile.sample.iter().map(|s| s.value[0]).sum()
    }

    /// Share of CPU in samples whose stack contains a function whose name ends with `name`.
    pub fn share(&self, name: &str) -> f64 {
        let total = self.cpu_ns();
        if total == 0 {
            return 0.0;
        }
        let with: i64 = self
            .profile
            .sample
            .iter()
            .filter(|s| self.stack(s).iter().any(|f| f.ends_with(name)))
            .map(|s| s.value[1])
            .sum();
        with as f64 / total as f64
    }

    pub fn comments(&self) -> Vec<&str> {
        self.profile.comment.iter().map(|&i| self.s(i)).collect()
    }

    pub fn value_types(&self) -> Vec<(&str, &str)> {
        self.profile
            .sample_type
            .iter()
            .map(|t| (self.s(t.r#type), self.s(t.unit)))
            .collect()
    }
}

/// `name value` lines that fixture tests append to `FIXTURE_OUT`.
pub fn reported(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The libtest summary line ("test result: ...") without its timing.
pub fn summary(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .map(|l| l.split("; finished in").next().unwrap().to_string())
        .collect()
}
