//! The code's structure, held by a test so that it cannot drift from ARCHITECTURE.md's
//! invariants. Needs no service.
//!
//! - No import circle between the modules of any crate. Each module file's paths
//!   (`crate::…`, `super::…`, `self::…`, and a child module named from its parent, in `use`
//!   trees and in code) are read into a graph of the crate's module files; a name a module
//!   re-exports (`pub use`) is followed to the module that defines it, and a name re-exported
//!   from another crate adds no arrow. A circle fails with its path. Unit-test modules
//!   (`#[cfg(test)] mod …`) are left out: they sit below what they test by nature.
//! - No source file under `crates/*/src` over [`MAX_LINES`] lines.
//!
//! The reading is lexical, not a compiler's: macros and fully qualified paths inside string
//! literals are not seen. `a_circle_is_caught` and `a_re_export_is_not_a_circle` run it on
//! small crates written here, so a reading that went blind would fail them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The largest source file ARCHITECTURE.md allows under `crates/*/src`.
const MAX_LINES: usize = 600;

/// A module's path inside its crate: `[]` for the root, `["tiles", "url"]` for
/// `src/tiles/url.rs`.
type ModPath = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// `path` relative to the workspace, as the failure messages show it.
fn relative(path: &Path) -> String {
    let root = workspace();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every source root of the workspace's library and binary crates.
fn source_roots() -> Vec<PathBuf> {
    let root = workspace();
    let mut roots: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("crates/ is readable")
        .map(|entry| entry.expect("a directory entry").path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    for other in [
        "loadtests/src",
        "loadtests/capacity/src",
        "k8s/autoscaling-model/src",
    ] {
        let src = root.join(other);
        assert!(src.is_dir(), "{other} is a source root");
        roots.push(src);
    }
    roots.sort();
    roots
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crates of one source root: the library (or the binary when there is no library),
/// and `main.rs` apart when a library exists (it uses the library by its crate name, from
/// outside). `src/bin/*` are crates of their own, each a single file.
fn crates_of(src: &Path) -> Vec<BTreeMap<ModPath, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let has_lib = src.join("lib.rs").is_file();
    let mut main = BTreeMap::new();
    let mut modules = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        if rel.starts_with("bin") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let mut path: ModPath = rel
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|last| last == "mod") {
            path.pop();
        }
        if path == ["main"] && has_lib {
            main.insert(Vec::new(), text);
        } else {
            if path == ["lib"] || path == ["main"] {
                path.clear();
            }
            modules.insert(path, text);
        }
    }
    [modules, main]
        .into_iter()
        .filter(|m| !m.is_empty())
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

/// Source text without comments, string literals and `#[cfg(test)]` modules, as tokens.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Other);
        } else if c == 'r' && matches!(chars.get(i + 1), Some('#' | '"')) {
            // A raw string: r"…", r#"…"#, …
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(Token::Ident("r".into()));
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(Token::Other);
        } else if c == '\'' {
            // A char literal ('x', '\n', '{') or a lifetime ('a): skip the literal's content.
            if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else if chars.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else {
                i += 1;
            }
            out.push(Token::Other);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(match c {
                ':' if chars.get(i + 1) == Some(&':') => {
                    i += 1;
                    Token::Colons
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                '*' => Token::Star,
                _ if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Token::Other,
            });
            i += 1;
        }
    }
    without_test_modules(out)
}

/// Drops `#[cfg(test)] mod name { … }` (the attribute's tokens are `# [ cfg ( test ) ]`,
/// read here as `Other Other cfg Other test Other Other`).
fn without_test_modules(tokens: Vec<Token>) -> Vec<Token> {
    let ident = |t: &Token, s: &str| matches!(t, Token::Ident(i) if i == s);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_test_mod = i + 9 < tokens.len()
            && ident(&tokens[i + 2], "cfg")
            && ident(&tokens[i + 4], "test")
            && ident(&tokens[i + 7], "mod")
            && tokens[i + 9] == Token::Open;
        if !is_test_mod {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let mut depth = 0;
        i += 9;
        while i < tokens.len() {
            match tokens[i] {
                Token::Open => depth += 1,
                Token::Close => depth -= 1,
                _ => {}
            }
            i += 1;
            if depth == 0 {
                break;
            }
        }
    }
    out
}

/// The leaf paths of the use tree (or plain path) starting at `tokens[i]`, with the name
/// each one is brought in under (its last segment, or its `as` alias).
fn paths_at(tokens: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<(ModPath, String)>) {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*i) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                *i += 1;
            }
            Some(Token::Star) => {
                *i += 1;
                out.push((path, "*".into()));
                return;
            }
            Some(Token::Open) => {
                *i += 1;
                loop {
                    match tokens.get(*i) {
                        Some(Token::Close) => {
                            *i += 1;
                            return;
                        }
                        Some(Token::Comma) => *i += 1,
                        None => return,
                        Some(_) => {
                            let before = *i;
                            paths_at(tokens, i, &path, out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            _ => return,
        }
        if tokens.get(*i) == Some(&Token::Colons) {
            *i += 1;
            continue;
        }
        let mut name = path.last().cloned().unwrap_or_default();
        if matches!(tokens.get(*i), Some(Token::Ident(a)) if a == "as") {
            if let Some(Token::Ident(alias)) = tokens.get(*i + 1) {
                name = alias.clone();
            }
            *i += 2;
        }
        out.push((path, name));
        return;
    }
}

/// Where a re-exported name comes from.
#[derive(Clone)]
enum Origin {
    /// A path inside the crate, from its root.
    Here(ModPath),
    /// Another crate (`pub use fractile_render::TileKey`): no arrow.
    Elsewhere,
}

/// What one module file refers to: every path it names that starts inside its crate, and
/// what it re-exports (`pub use`, `pub(crate) use`) under which name.
#[derive(Default)]
struct Refs {
    paths: Vec<ModPath>,
    reexports: BTreeMap<String, Origin>,
}

fn refs_of(module: &[String], text: &str, children: &BTreeSet<String>) -> Refs {
    let tokens = tokens(text);
    let inside = |first: &String| {
        first == "crate" || first == "super" || first == "self" || children.contains(first)
    };
    let mut refs = Refs::default();
    let mut i = 0;
    while i < tokens.len() {
        let Token::Ident(word) = &tokens[i] else {
            i += 1;
            continue;
        };
        if word == "use" {
            // `pub use`, `pub(crate) use`, `pub(super) use`: the `pub` is at most four
            // tokens back.
            let public = tokens[i.saturating_sub(4)..i]
                .iter()
                .any(|t| matches!(t, Token::Ident(p) if p == "pub"));
            i += 1;
            let mut found = Vec::new();
            paths_at(&tokens, &mut i, &[], &mut found);
            for (path, name) in found {
                let here = path.first().is_some_and(&inside);
                let origin = if here {
                    let absolute = absolute(module, &path);
                    refs.paths.push(absolute.clone());
                    Origin::Here(absolute)
                } else {
                    Origin::Elsewhere
                };
                if public && name != "*" && name != "self" {
                    refs.reexports.insert(name, origin);
                }
            }
            continue;
        }
        let starts_path = inside(word)
            && tokens.get(i + 1) == Some(&Token::Colons)
            && (i == 0 || tokens[i - 1] != Token::Colons);
        if !starts_path {
            i += 1;
            continue;
        }
        let mut found = Vec::new();
        paths_at(&tokens, &mut i, &[], &mut found);
        refs.paths
            .extend(found.into_iter().map(|(path, _)| absolute(module, &path)));
    }
    refs
}

/// `path` as seen from `module`, made absolute (from the crate root), `self`/`super`
/// resolved; a path starting with a child's name is below `module`.
fn absolute(module: &[String], path: &[String]) -> ModPath {
    let mut out: ModPath = module.to_vec();
    let mut rest = path;
    if path.first().is_some_and(|first| first == "crate") {
        out.clear();
        rest = &path[1..];
    }
    for seg in rest {
        match seg.as_str() {
            "self" => {}
            "super" => {
                out.pop();
            }
            _ => out.push(seg.clone()),
        }
    }
    out
}

/// The module that defines what `path` names: its longest prefix that is a module file,
/// then through that module's re-exports to the module the item comes from. `None` for a
/// name re-exported from another crate.
fn target(
    path: &[String],
    modules: &BTreeSet<ModPath>,
    reexports: &BTreeMap<ModPath, BTreeMap<String, Origin>>,
    depth: usize,
) -> Option<ModPath> {
    let mut module = Vec::new();
    for (n, seg) in path.iter().enumerate() {
        let mut next = module.clone();
        next.push(seg.clone());
        if modules.contains(&next) {
            module = next;
            continue;
        }
        return match reexports.get(&module).and_then(|names| names.get(seg)) {
            Some(Origin::Elsewhere) => None,
            Some(Origin::Here(origin)) if depth < 8 && origin != path => {
                let mut rest = origin.clone();
                rest.extend(path[n + 1..].iter().cloned());
                target(&rest, modules, reexports, depth + 1)
            }
            _ => Some(module),
        };
    }
    Some(module)
}

/// The arrows between a crate's module files.
fn graph(crate_modules: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let modules: BTreeSet<ModPath> = crate_modules.keys().cloned().collect();
    let children = |m: &ModPath| -> BTreeSet<String> {
        modules
            .iter()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .filter_map(|c| c.last().cloned())
            .collect()
    };
    let mut refs: BTreeMap<ModPath, Refs> = crate_modules
        .iter()
        .map(|(m, text)| (m.clone(), refs_of(m, text, &children(m))))
        .collect();
    let reexports: BTreeMap<ModPath, BTreeMap<String, Origin>> = refs
        .iter_mut()
        .map(|(m, r)| (m.clone(), std::mem::take(&mut r.reexports)))
        .collect();
    refs.iter()
        .map(|(m, r)| {
            let to = r
                .paths
                .iter()
                .filter_map(|p| target(p, &modules, &reexports, 0))
                .filter(|t| t != m)
                .collect();
            (m.clone(), to)
        })
        .collect()
}

/// Every circle of the graph (its strongly connected components of more than one module),
/// each as the modules in it.
fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    // Tarjan's algorithm; the graphs are a few dozen nodes.
    struct State<'a> {
        graph: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let Some((w, _)) = graph.get_key_value(w) else {
                continue;
            };
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
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
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
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.out
}

fn shown(module: &ModPath) -> String {
    if module.is_empty() {
        "(root)".into()
    } else {
        module.join("::")
    }
}

fn crate_of(modules: &[(&str, &str)]) -> BTreeMap<ModPath, String> {
    modules
        .iter()
        .map(|(path, text)| {
            let path = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            (path, (*text).to_string())
        })
        .collect()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut found = Vec::new();
    let mut modules_read = 0;
    for src in source_roots() {
        for modules in crates_of(&src) {
            modules_read += modules.len();
            let graph = graph(&modules);
            for circle in circles(&graph) {
                let names: Vec<String> = circle.iter().map(shown).collect();
                found.push(format!("{}: {}", relative(&src), names.join(" ↔ ")));
            }
        }
    }
    assert!(modules_read > 80, "read only {modules_read} modules");
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut files = Vec::new();
    for src in source_roots() {
        if src.parent().and_then(Path::parent) == Some(&workspace().join("crates")) {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "read only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file)
                .expect("readable")
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", relative(file)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split by concern, or say why in ARCHITECTURE.md and here):\n{}",
        long.join("\n")
    );
}

#[test]
fn a_circle_is_caught() {
    // state ↔ seeds, the circle the structural review found: each names the other, one in
    // a grouped `use`, the other through a path in code.
    let modules = crate_of(&[
        ("", "mod state; mod seeds; pub use state::AppState;"),
        (
            "state",
            "// crate::seeds::Nothing in a comment is no arrow\n\
             use crate::{error::E, seeds::{self, Seeds}};\n\
             pub struct AppState { seeds: Seeds }",
        ),
        (
            "seeds",
            "pub struct Seeds; fn f(s: &crate::AppState) -> \"crate::x::y\" { todo!() }",
        ),
        ("error", "pub struct E;"),
    ]);
    let found = circles(&graph(&modules));
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|c| c.iter().map(shown).collect())
        .collect();
    assert_eq!(names, [["seeds", "state"]]);

    // Through `super` and a child named from its parent (2018 paths), three modules round.
    let modules = crate_of(&[
        ("", "mod tiles;"),
        (
            "tiles",
            "mod url; mod headers; use headers::etag; pub struct Key;",
        ),
        (
            "tiles::headers",
            "use super::url::canonical; pub fn etag() {}",
        ),
        ("tiles::url", "pub fn canonical(k: super::Key) {}"),
    ]);
    let found = circles(&graph(&modules));
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|c| c.iter().map(shown).collect())
        .collect();
    assert_eq!(names, [["tiles", "tiles::headers", "tiles::url"]]);
}

#[test]
fn a_re_export_is_not_a_circle() {
    // The root re-exports `TileKey` from `cache` and `Png` from another crate; `cache` and
    // `tiles` name them through the root: the arrows lead to where they are defined.
    let modules = crate_of(&[
        (
            "",
            "mod cache; mod tiles; pub use cache::{Cache, TileKey as Key}; \
             pub use fractile_render::Png;",
        ),
        (
            "cache",
            "use crate::Png; pub struct Cache; pub struct TileKey;",
        ),
        ("tiles", "use crate::{Cache, Key};"),
        (
            "tiles::url",
            "#[cfg(test)]\nmod tests { use crate::tiles::Whatever; }",
        ),
    ]);
    let graph = graph(&modules);
    assert_eq!(circles(&graph), Vec::<Vec<ModPath>>::new());
    let tiles: Vec<String> = graph[&vec!["tiles".to_string()]]
        .iter()
        .map(shown)
        .collect();
    assert_eq!(tiles, ["cache"]);
    assert!(graph[&vec!["cache".to_string()]].is_empty());
    assert!(graph[&vec!["tiles".to_string(), "url".to_string()]].is_empty());
}
