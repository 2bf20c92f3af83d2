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

/// The layers ARCHITECTURE.md lists hold: every `crate::` path in a module of src/ (its
/// unit tests aside) names a module on a lower layer, the module itself, or the crate
/// root's re-exports from above it. So the import graph has no cycle and nothing runs back
/// up.
#[test]
fn every_module_imports_only_lower_layers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut layer_of = std::collections::HashMap::new();
    for line in map.lines() {
        let Some(rest) = line.strip_prefix("layer ") else {
            continue;
        };
        let (n, modules) = rest.split_once(':').expect("`layer N: modules`");
        let n: u32 = n.trim().parse().expect("a layer number");
        for m in modules.split_whitespace() {
            assert!(
                layer_of.insert(m.to_string(), n).is_none(),
                "{m} listed twice"
            );
        }
    }
    assert!(
        layer_of.len() > 20,
        "{layer_of:?}: is the list still read right?"
    );
    let src = root.join("src");
    let mut modules: Vec<(String, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        modules.push((name, path));
    }
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (module, path) in &modules {
        let Some(&own) = layer_of.get(module.as_str()) else {
            wrong.push(format!("src/{module} is on no layer of ARCHITECTURE.md"));
            continue;
        };
        for file in rust_files(path) {
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for used in crate_paths(code) {
                let target = if layer_of.contains_key(used.as_str()) && used != "lib" {
                    used
                } else {
                    // A re-export of the crate root's.
                    "lib".to_string()
                };
                checked += 1;
                let theirs = layer_of[target.as_str()];
                if target != *module && theirs >= own {
                    wrong.push(format!(
                        "{} (layer {own}) uses crate::{target} (layer {theirs})",
                        file.strip_prefix(root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "{checked} paths checked: is the source still read right?"
    );
    assert!(
        wrong.is_empty(),
        "imports that break the layers:\n{}",
        wrong.join("\n")
    );
}

/// `path` if it is a Rust file, else the Rust files under it.
fn rust_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(rust_files(&entry.unwrap().path()));
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    files
}

/// The first segment of every `crate::` path in `code`, `use crate::{a, b::c}` groups
/// included, comments left out.
fn crate_paths(code: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` is the macro's caller's view of the root.
        if code[..i].ends_with('$') || code[..i].ends_with("super::") {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            let inner = &group[..end];
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(ident(&inner[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            found.push(ident(&inner[start..]));
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|f| !f.is_empty());
    found
}
