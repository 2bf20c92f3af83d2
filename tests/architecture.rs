//! ARCHITECTURE.md is the map: every file and folder it names exists, so a move that
//! forgets the map fails here.

#[test]
fn every_path_architecture_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for word in map.split(|c: char| c.is_whitespace() || "`(),;:|*".contains(c)) {
        // Paths under the workspace's own folders, as the map writes them.
        let top = [
            "src/",
            "tests/",
            "macros/",
            "xtask/",
            "benches/",
            "example/",
            "examples/",
        ];
        if !top.iter().any(|t| word.starts_with(t)) {
            continue;
        }
        let path = word.trim_end_matches(['.', '\'']);
        // `src/<name>.rs` written as a pattern, and `<binary>`-style placeholders.
        if path.contains('<') {
            continue;
        }
        named += 1;
        if !root.join(path).exists() {
            missing.push(path.to_string());
        }
    }
    assert!(
        named > 50,
        "{named} paths found: is the map still read right?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
