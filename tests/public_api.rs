//! The public API, every feature on, as one line per item with its signature, against the
//! snapshot in tests/public-api.txt: a change to what users can name fails here until the
//! snapshot is updated with it (`PUBLIC_API=bless cargo test --all-features --test
//! public_api`), so that it is made on purpose and seen in review.
//!
//! The lines come from rustdoc's JSON output (unstable, so asked for with
//! `RUSTC_BOOTSTRAP=1`): its item paths and signatures, written back as Rust. Only the shape
//! of the API is kept: docs, spans and ids are not, and items are sorted.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_public_api_is_the_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/public-api");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTDOCFLAGS")
        .args([
            "rustdoc",
            "--quiet",
            "--lib",
            "--all-features",
            "-p",
            "profiled",
            "--",
        ])
        .args(["-Z", "unstable-options", "--output-format", "json"])
        .status()
        .unwrap();
    assert!(status.success(), "cargo rustdoc failed");
    let text = std::fs::read_to_string(target.join("doc/profiled.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let api = Api { doc: &doc };
    let mut lines = BTreeSet::new();
    let root_id = id_of(&doc["root"]);
    api.module(&root_id, "profiled", &mut lines);
    let now: String = lines.into_iter().map(|l| l + "\n").collect();
    let snapshot = root.join("tests/public-api.txt");
    if std::env::var("PUBLIC_API").as_deref() == Ok("bless") {
        std::fs::write(&snapshot, &now).unwrap();
        return;
    }
    let before = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if before != now {
        let (was, is): (BTreeSet<&str>, BTreeSet<&str>) =
            (before.lines().collect(), now.lines().collect());
        let mut diff = String::new();
        for gone in was.difference(&is) {
            diff += &format!("- {gone}\n");
        }
        for new in is.difference(&was) {
            diff += &format!("+ {new}\n");
        }
        panic!(
            "the public API changed:\n{diff}\nif that is meant, update the snapshot \
             (PUBLIC_API=bless cargo test --all-features --test public_api) and say what \
             changed in CHANGELOG.md"
        );
    }
}

/// An id as the index's keys spell it.
fn id_of(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

struct Api<'a> {
    doc: &'a Value,
}

impl Api<'_> {
    fn item(&self, id: &str) -> Option<&Value> {
        self.doc["index"].get(id)
    }

    fn is_public(item: &Value) -> bool {
        item["visibility"] == "public" || item["visibility"] == "default"
    }

    /// Every public item of module `id`, named under `path`.
    fn module(&self, id: &str, path: &str, out: &mut BTreeSet<String>) {
        let Some(module) = self.item(id) else { return };
        for child in module["inner"]["module"]["items"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(item) = self.item(&id_of(child)) else {
                continue;
            };
            if !Self::is_public(item) {
                continue;
            }
            if let Some(reexport) = item["inner"].get("use") {
                let name = reexport["name"].as_str().unwrap_or("");
                let target = id_of(&reexport["id"]);
                match self.item(&target) {
                    Some(t) if reexport["is_glob"] != true => {
                        self.named(t, &target, &format!("{path}::{name}"), out)
                    }
                    _ => {
                        let source = reexport["source"].as_str().unwrap_or("");
                        out.insert(format!("pub use {path}::{name} = {source}"));
                    }
                }
                continue;
            }
            let name = item["name"].as_str().unwrap_or("");
            self.named(item, &id_of(child), &format!("{path}::{name}"), out);
        }
    }

    /// One item, named `path`, and what hangs off it.
    fn named(&self, item: &Value, id: &str, path: &str, out: &mut BTreeSet<String>) {
        let inner = &item["inner"];
        let Some((kind, body)) = inner.as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        match kind.as_str() {
            "module" => {
                out.insert(format!("pub mod {path}"));
                self.module(id, path, out);
            }
            "function" => {
                out.insert(format!("pub {}", self.function(path, body)));
            }
            "struct" => {
                let generics = self.generics(&body["generics"]);
                out.insert(format!("pub struct {path}{generics}"));
                if let Some(fields) = body["kind"]["plain"]["fields"].as_array() {
                    for f in fields {
                        if let Some(field) = self.item(&id_of(f)).filter(|f| Self::is_public(f)) {
                            out.insert(format!(
                                "pub {path}::{}: {}",
                                field["name"].as_str().unwrap_or(""),
                                self.ty(&field["inner"]["struct_field"])
                            ));
                        }
                    }
                }
                self.impls(&body["impls"], path, out);
            }
            "enum" => {
                let generics = self.generics(&body["generics"]);
                out.insert(format!("pub enum {path}{generics}"));
                for v in body["variants"].as_array().into_iter().flatten() {
                    if let Some(variant) = self.item(&id_of(v)) {
                        out.insert(format!(
                            "pub {path}::{}",
                            variant["name"].as_str().unwrap_or("")
                        ));
                    }
                }
                self.impls(&body["impls"], path, out);
            }
            "trait" => {
                out.insert(format!("pub trait {path}"));
                for m in body["items"].as_array().into_iter().flatten() {
                    if let Some(method) = self.item(&id_of(m)) {
                        self.member(method, path, out);
                    }
                }
            }
            "constant" => {
                out.insert(format!("pub const {path}: {}", self.ty(&body["type"])));
            }
            "static" => {
                out.insert(format!("pub static {path}: {}", self.ty(&body["type"])));
            }
            "type_alias" => {
                out.insert(format!("pub type {path} = {}", self.ty(&body["type"])));
            }
            "macro" | "proc_macro" => {
                out.insert(format!("pub macro {path}"));
            }
            other => {
                out.insert(format!("pub {other} {path}"));
            }
        }
    }

    /// A method or associated item of a type or trait.
    fn member(&self, item: &Value, owner: &str, out: &mut BTreeSet<String>) {
        let name = item["name"].as_str().unwrap_or("");
        let inner = &item["inner"];
        let path = format!("{owner}::{name}");
        if let Some(f) = inner.get("function") {
            out.insert(format!("pub {}", self.function(&path, f)));
        } else if let Some(c) = inner.get("assoc_const") {
            out.insert(format!("pub const {path}: {}", self.ty(&c["type"])));
        } else if let Some(t) = inner.get("assoc_type") {
            let ty = t.get("type").map(|t| self.ty(t)).unwrap_or_default();
            out.insert(format!("pub type {path} = {ty}"));
        }
    }

    /// A type's inherent methods and constants, and the traits it implements by hand.
    fn impls(&self, impls: &Value, path: &str, out: &mut BTreeSet<String>) {
        for i in impls.as_array().into_iter().flatten() {
            let Some(imp) = self.item(&id_of(i)) else {
                continue;
            };
            let body = &imp["inner"]["impl"];
            if body["is_synthetic"] == true || !body["blanket_impl"].is_null() {
                continue;
            }
            match body.get("trait").filter(|t| !t.is_null()) {
                None => {
                    for m in body["items"].as_array().into_iter().flatten() {
                        if let Some(method) = self.item(&id_of(m)).filter(|m| Self::is_public(m)) {
                            self.member(method, path, out);
                        }
                    }
                }
                Some(t) => {
                    let generics = self.generics(&body["generics"]);
                    out.insert(format!("impl{generics} {} for {path}", self.path(t)));
                }
            }
        }
    }

    fn function(&self, path: &str, f: &Value) -> String {
        let header = &f["header"];
        let mut s = String::new();
        if header["is_const"] == true {
            s += "const ";
        }
        if header["is_async"] == true {
            s += "async ";
        }
        if header["is_unsafe"] == true {
            s += "unsafe ";
        }
        let inputs: Vec<String> = f["sig"]["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let name = p[0].as_str().unwrap_or("_");
                let ty = self.ty(&p[1]);
                match name {
                    "self" => match ty.as_str() {
                        "Self" => "self".to_string(),
                        "&Self" => "&self".to_string(),
                        "&mut Self" => "&mut self".to_string(),
                        _ => format!("self: {ty}"),
                    },
                    _ => format!("{name}: {ty}"),
                }
            })
            .collect();
        s += &format!(
            "fn {path}{}({})",
            self.generics(&f["generics"]),
            inputs.join(", ")
        );
        let output = &f["sig"]["output"];
        if !output.is_null() {
            s += &format!(" -> {}", self.ty(output));
        }
        s
    }

    /// `<T: Bound, 'a>`, synthetic (`impl Trait` argument) parameters left out.
    fn generics(&self, g: &Value) -> String {
        let params: Vec<String> = g["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let name = p["name"].as_str().unwrap_or("");
                let kind = &p["kind"];
                if let Some(t) = kind.get("type") {
                    if t["is_synthetic"] == true {
                        return None;
                    }
                    let bounds = self.bounds(&t["bounds"]);
                    return Some(match bounds.is_empty() {
                        true => name.to_string(),
                        false => format!("{name}: {bounds}"),
                    });
                }
                if let Some(c) = kind.get("const") {
                    return Some(format!("const {name}: {}", self.ty(&c["type"])));
                }
                Some(name.to_string())
            })
            .collect();
        match params.is_empty() {
            true => String::new(),
            false => format!("<{}>", params.join(", ")),
        }
    }

    fn bounds(&self, bounds: &Value) -> String {
        let all: Vec<String> = bounds
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| {
                if let Some(t) = b.get("trait_bound") {
                    let maybe = if t["modifier"] == "maybe" { "?" } else { "" };
                    return Some(format!("{maybe}{}", self.path(&t["trait"])));
                }
                b.get("outlives")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        all.join(" + ")
    }

    /// A path's last segment (how the source spells the rest, `super::` or `crate::`, is
    /// not the API) with its generic arguments.
    fn path(&self, p: &Value) -> String {
        let written = p["path"]
            .as_str()
            .or_else(|| p["name"].as_str())
            .unwrap_or("");
        let name = written.rsplit("::").next().unwrap_or(written);
        format!("{name}{}", self.args(&p["args"]))
    }

    fn args(&self, args: &Value) -> String {
        if let Some(a) = args.get("angle_bracketed") {
            let mut all: Vec<String> = a["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|arg| {
                    if let Some(t) = arg.get("type") {
                        self.ty(t)
                    } else if let Some(l) = arg.get("lifetime") {
                        l.as_str().unwrap_or("'_").to_string()
                    } else if let Some(c) = arg.get("const") {
                        c["expr"].as_str().unwrap_or("_").to_string()
                    } else {
                        "_".to_string()
                    }
                })
                .collect();
            for c in a["constraints"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("");
                match c["binding"].get("equality") {
                    Some(eq) => all.push(format!("{name} = {}", self.ty(&eq["type"]))),
                    None => all.push(format!(
                        "{name}: {}",
                        self.bounds(&c["binding"]["constraint"])
                    )),
                }
            }
            if all.is_empty() {
                return String::new();
            }
            return format!("<{}>", all.join(", "));
        }
        if let Some(p) = args.get("parenthesized") {
            let inputs: Vec<String> = p["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| self.ty(t))
                .collect();
            let output = match &p["output"] {
                Value::Null => String::new(),
                t => format!(" -> {}", self.ty(t)),
            };
            return format!("({}){output}", inputs.join(", "));
        }
        String::new()
    }

    fn ty(&self, t: &Value) -> String {
        let Some((kind, v)) = t.as_object().and_then(|o| o.iter().next()) else {
            return "_".into();
        };
        match kind.as_str() {
            "primitive" | "generic" => v.as_str().unwrap_or("_").to_string(),
            "resolved_path" => self.path(v),
            "borrowed_ref" => {
                let lifetime = v["lifetime"]
                    .as_str()
                    .map(|l| format!("{l} "))
                    .unwrap_or_default();
                let mutable = if v["is_mutable"] == true { "mut " } else { "" };
                format!("&{lifetime}{mutable}{}", self.ty(&v["type"]))
            }
            "raw_pointer" => {
                let m = if v["is_mutable"] == true {
                    "mut"
                } else {
                    "const"
                };
                format!("*{m} {}", self.ty(&v["type"]))
            }
            "slice" => format!("[{}]", self.ty(v)),
            "array" => format!(
                "[{}; {}]",
                self.ty(&v["type"]),
                v["len"].as_str().unwrap_or("_")
            ),
            "tuple" => {
                let items: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| self.ty(t))
                    .collect();
                format!("({})", items.join(", "))
            }
            "impl_trait" => format!("impl {}", self.bounds(v)),
            "dyn_trait" => {
                let traits: Vec<String> = v["traits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| self.path(&t["trait"]))
                    .collect();
                let lifetime = v["lifetime"]
                    .as_str()
                    .map(|l| format!(" + {l}"))
                    .unwrap_or_default();
                format!("dyn {}{lifetime}", traits.join(" + "))
            }
            "qualified_path" => format!(
                "<{} as {}>::{}",
                self.ty(&v["self_type"]),
                v["trait"]
                    .as_object()
                    .map_or("_".into(), |_| self.path(&v["trait"])),
                v["name"].as_str().unwrap_or("")
            ),
            "function_pointer" => {
                let inputs: Vec<String> = v["sig"]["inputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| self.ty(&p[1]))
                    .collect();
                let output = match &v["sig"]["output"] {
                    Value::Null => String::new(),
                    t => format!(" -> {}", self.ty(t)),
                };
                format!("fn({}){output}", inputs.join(", "))
            }
            other => other.to_string(),
        }
    }
}
