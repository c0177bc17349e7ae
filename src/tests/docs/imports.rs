//! The module graph docs/architecture.md promises, read from the source of
//! every crate of the workspace: no module imports one that imports it back
//! (directly or round a longer cycle), and the edge's layers point one way,
//! `commands` → `control` → `data`.
//!
//! A module here is a file of `src/` with its submodules folded in: in a
//! member crate the top-level module (`snapshot`, with `snapshot/cells.rs`),
//! in the edge the module of a layer (`data::proxy`, with
//! `data/proxy/stages.rs`). Its imports are the `crate::` and `super::`
//! paths of its code (comments and `#[cfg(test)] mod tests` blocks left
//! out); unit-test files (`tests.rs`, `*_tests.rs`, `testutil.rs`) are not
//! modules of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate of the workspace: where its source is and how many path
/// segments name one of its modules.
struct Crate {
    name: &'static str,
    src: &'static str,
    depth: usize,
}

const CRATES: &[Crate] = &[
    Crate {
        name: "geoedge",
        src: "src",
        depth: 2,
    },
    Crate {
        name: "geoedge-routing",
        src: "routing/src",
        depth: 1,
    },
    Crate {
        name: "geoedge-geoip",
        src: "geoip/src",
        depth: 1,
    },
    Crate {
        name: "geoedge-wireguard",
        src: "wireguard/src",
        depth: 1,
    },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files of a crate's source, by module path; folders that are
/// not the crate's modules (tests, fuzz targets, other crates) left out.
fn files(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    fn walk(dir: &Path, at: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if path.join("Cargo.toml").exists()
                    || (at.is_empty() && ["tests", "fuzz", "bin"].contains(&name.as_str()))
                {
                    continue;
                }
                let mut next = at.to_vec();
                next.push(name);
                walk(&path, &next, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if name == "tests" || name.ends_with("_tests") || name == "testutil" {
                    continue;
                }
                let mut module = at.to_vec();
                if !(at.is_empty() && (name == "lib" || name == "main")) {
                    module.push(name);
                }
                out.push((module, path));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, &[], &mut out);
    out
}

/// `text` without comments and without an inline `#[cfg(test)] mod tests`
/// block at its end.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::new();
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut line = line;
        if in_block > 0 {
            match line.find("*/") {
                Some(end) => {
                    in_block -= 1;
                    line = &line[end + 2..];
                }
                None => continue,
            }
        }
        if let Some(start) = line.find("/*") {
            if !line[start..].contains("*/") {
                in_block += 1;
            }
            line = &line[..start];
        }
        if let Some(start) = line.find("//") {
            line = &line[..start];
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The paths a use-tree starting at `s` names (`a::b::{c, d::e}` gives
/// `a::b::c` and `a::b::d::e`); each path stops at the first character
/// that cannot continue it.
fn tree(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        // Split the group at its top-level commas.
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&rest[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&rest[start..end]);
        return items
            .into_iter()
            .filter(|i| !i.trim().is_empty())
            .flat_map(tree)
            .collect();
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        return vec![Vec::new()];
    }
    let rest = &s[ident.len()..];
    match rest.strip_prefix("::") {
        Some(rest) => tree(rest)
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

/// The module paths `code` of module `at` refers to, absolute.
fn references(code: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        if i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b'$')
        {
            continue;
        }
        out.extend(tree(&code[i + "crate::".len()..]));
    }
    for (i, _) in code.match_indices("super::") {
        if i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':')
        {
            continue;
        }
        let mut rest = &code[i..];
        let mut base = at.to_vec();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        out.extend(tree(rest).into_iter().map(|p| {
            let mut full = base.clone();
            full.extend(p);
            full
        }));
    }
    out
}

/// The module graph of a crate: module → the modules it imports.
fn graph(krate: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let files = files(&root().join(krate.src));
    let node = |path: &[String]| -> Option<String> {
        (path.len() >= krate.depth).then(|| path[..krate.depth].join("::"))
    };
    let nodes: BTreeSet<String> = files.iter().filter_map(|(m, _)| node(m)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        nodes.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
    for (module, path) in &files {
        let Some(from) = node(module) else { continue };
        let text = std::fs::read_to_string(path).unwrap();
        for reference in references(&code(&text), module) {
            if let Some(to) = node(&reference) {
                if to != from && nodes.contains(&to) {
                    graph.get_mut(&from).unwrap().insert(to);
                }
            }
        }
    }
    graph
}

/// The cycles of a graph: its strongly connected components of more than
/// one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_reader_sees_use_trees_and_relative_paths() {
    let at = ["data".to_owned(), "proxy".to_owned(), "stages".to_owned()];
    let refs = references(
        &code("use crate::data::{relay::{Ended, Meter}, dialer};\n// crate::commands::x\nuse super::super::admission::Slot;\nlet x = crate::control::y();"),
        &at,
    );
    let joined: Vec<String> = refs.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "data::relay::Ended",
            "data::relay::Meter",
            "data::dialer",
            "control::y",
            "data::admission::Slot"
        ]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(cycles(&graph), [["a", "b", "c"]]);
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut found = Vec::new();
    for krate in CRATES {
        let graph = graph(krate);
        assert!(graph.len() > 3, "{}: no modules found", krate.name);
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|t| cycle.contains(t))
                        .map(move |t| format!("{m} → {t}"))
                })
                .collect();
            found.push(format!("{}: {}", krate.name, edges.join(", ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_layers_of_the_edge_point_one_way() {
    let graph = graph(&CRATES[0]);
    let rank = |module: &str| match module.split("::").next() {
        Some("data") => 0,
        Some("control") => 1,
        Some("commands") => 2,
        other => panic!("a module outside the layers: {other:?}"),
    };
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| rank(t) > rank(from))
                .map(move |t| format!("{from} → {t}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
    for layer in ["data", "control", "commands"] {
        assert!(
            graph.keys().any(|m| m.starts_with(layer)),
            "no module in {layer}"
        );
    }
}
