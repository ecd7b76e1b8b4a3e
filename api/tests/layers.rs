//! The layers of `api/src` are true: `lib.rs` declares the modules bottom to top, and a
//! module uses only modules declared before it. Inside a module, no two files use each other
//! (directly or round a longer circle).
//!
//! Read from the source as text: every `crate::…` and `super::…` path (in `use` items and
//! inline), comments left out. A failure names the importing file, the file or module it
//! reaches, and the path written.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// One path written in a file: `crate::` (or `super::`, resolved) and its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    /// The absolute module path it names, from the crate root (`["db", "error", "is_unavailable"]`).
    segments: Vec<String>,
    /// As written, for the message.
    written: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, relative to it (`db/request.rs`).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).expect("readable source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// The module path of a file: `db/request.rs` → `["db", "request"]`, `db/mod.rs` → `["db"]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `source` without its comments (line comments, doc comments and block comments) and
/// string literals, so a path in prose or in a message is not taken for an import.
fn code_of(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                code.push_str("\"\"");
            }
            // A char literal ('"', '\'' …) — not a lifetime, which has no closing quote.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let skip = if rest.starts_with('\\') {
                    rest.find('\'').filter(|&i| i > 0).map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                match skip {
                    Some(n) => {
                        for _ in 0..n {
                            chars.next();
                        }
                        code.push_str("' '");
                    }
                    None => code.push(c),
                }
            }
            _ => code.push(c),
        }
    }
    code
}

/// The `crate::` and `super::` paths of `code`, a file of module `module`, resolved to
/// absolute module paths. `use` trees (`use crate::{a::{b, c}, d};`) are expanded.
fn imports(code: &str, module: &[String], is_mod_file: bool) -> Vec<Import> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        if at_word_start && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (tree, end) = read_path_tree(&bytes, i);
            for path in expand(&tree) {
                if let Some(segments) = resolve(&path, module, is_mod_file) {
                    found.push(Import {
                        segments,
                        written: path.join("::"),
                    });
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// The path (or use tree) starting at `start`: identifiers, `::`, and balanced braces.
fn read_path_tree(chars: &[char], start: usize) -> (String, usize) {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        let part_of_path = c.is_alphanumeric() || c == '_' || c == ':' || c == '*';
        if c == '{' {
            depth += 1;
        } else if c == '}' {
            if depth == 0 {
                break;
            }
            depth -= 1;
        } else if !part_of_path && depth == 0 {
            break;
        }
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// Expand a use tree into its paths: `crate::{a::{b, c as d}, e}` →
/// `[crate::a::b, crate::a::c, crate::e]` (each as segments; `self` and `*` dropped).
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(open) = tree.find('{') else {
        let segments: Vec<String> = tree
            .split("::")
            .map(|s| s.split(' ').next().unwrap_or("").to_owned())
            .filter(|s| !s.is_empty() && s != "*" && s != "self")
            .collect();
        return vec![segments];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut paths = Vec::new();
    for item in split_top_level(inner) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if item == "self" {
            paths.extend(expand(prefix));
            continue;
        }
        paths.extend(expand(&format!("{prefix}::{item}")));
    }
    paths
}

/// `a, b::{c, d}, e` split at its top-level commas.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&list[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[from..]);
    parts
}

/// An absolute module path for `path`, written in a file of `module`.
fn resolve(path: &[String], module: &[String], is_mod_file: bool) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "super" => {
            // In `db/request.rs` (module db::request) `super` is `db`; in `db/mod.rs`
            // (module db) it is the crate root.
            let mut base = module.to_vec();
            let _ = is_mod_file;
            base.pop()?;
            let mut rest = rest.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest.remove(0);
            }
            base.extend(rest);
            Some(base)
        }
        _ => None,
    }
}

/// The file that defines the longest prefix of `segments` (`["db", "error", "x"]` →
/// `db/error.rs`).
fn file_of(segments: &[String], files: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    for len in (1..=segments.len()).rev() {
        let base: PathBuf = segments[..len].iter().collect();
        for candidate in [base.with_extension("rs"), base.join("mod.rs")] {
            if files.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The top-level modules in the order `lib.rs` declares them.
fn declared_order(lib: &str) -> Vec<String> {
    code_of(lib)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// Every import between files of `sources` (file → its code) that breaks the layers: an
/// import of a top-level module declared after the importer's, or a circle between files.
fn violations(order: &[String], sources: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let files: BTreeSet<PathBuf> = sources.keys().cloned().collect();
    let rank = |module: &str| order.iter().position(|m| m == module);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<PathBuf, BTreeMap<PathBuf, String>> = BTreeMap::new();
    for (file, code) in sources {
        let module = module_of(file);
        let is_mod_file = file.file_name().is_some_and(|n| n == "mod.rs");
        let Some(own) = module.first() else {
            continue; // lib.rs declares the modules; it imports nothing of its own
        };
        if file.starts_with("bin") || file == Path::new("main.rs") {
            continue; // binaries sit on top of the library
        }
        for import in imports(code, &module, is_mod_file) {
            let Some(target) = import.segments.first() else {
                continue;
            };
            if target != own {
                match (rank(own), rank(target)) {
                    (Some(from), Some(to)) if to < from => {}
                    (Some(_), Some(_)) => problems.push(format!(
                        "{} (layer `{own}`) imports `{}` from layer `{target}`, which lib.rs \
                         declares above it",
                        file.display(),
                        import.written
                    )),
                    _ => problems.push(format!(
                        "{} imports `{}`: `{target}` is not a layer lib.rs declares",
                        file.display(),
                        import.written
                    )),
                }
            }
            if let Some(to) = file_of(&import.segments, &files).filter(|to| to != file) {
                edges
                    .entry(file.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(import.written);
            }
        }
    }
    for (from, targets) in &edges {
        for (to, written) in targets {
            if from < to
                && let Some(back) = path_between(&edges, to, from)
            {
                problems.push(format!(
                    "{} and {} use each other: {} imports `{written}`, and {} reaches it \
                     back through {}",
                    from.display(),
                    to.display(),
                    from.display(),
                    to.display(),
                    back.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" → ")
                ));
            }
        }
    }
    problems
}

/// A chain of imports from `from` to `to`, if there is one.
fn path_between(
    edges: &BTreeMap<PathBuf, BTreeMap<PathBuf, String>>,
    from: &Path,
    to: &Path,
) -> Option<Vec<PathBuf>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_path_buf()]];
    while let Some(chain) = stack.pop() {
        let last = chain.last().unwrap().clone();
        if last == to {
            return Some(chain);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in edges.get(&last).into_iter().flat_map(|t| t.keys()) {
            let mut longer = chain.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

fn read_sources() -> BTreeMap<PathBuf, String> {
    let dir = src_dir();
    rust_files(&dir)
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(dir.join(&file)).expect("a readable source file");
            (file, code_of(&text))
        })
        .collect()
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let order = declared_order(&fs::read_to_string(src_dir().join("lib.rs")).unwrap());
    assert!(
        order.len() >= 10,
        "lib.rs declares the layers as `pub mod …;` lines: found {order:?}"
    );
    let problems = violations(&order, &read_sources());
    assert!(
        problems.is_empty(),
        "the layers are not true:\n{}",
        problems.join("\n")
    );
}

/// The check itself catches what it is for: an import that runs upward and a circle.
#[test]
fn the_layer_check_catches_an_upward_import_and_a_circle() {
    let order: Vec<String> = ["config", "db", "http"].map(String::from).to_vec();
    let sources: BTreeMap<PathBuf, String> = [
        ("config.rs", "use std::fmt;"),
        (
            "db/mod.rs",
            "use crate::{config::Settings, http::error::is_unavailable};",
        ),
        ("http/mod.rs", "pub mod error; pub mod auth;"),
        (
            "http/error.rs",
            "use super::auth::Caller; // crate::db in a comment",
        ),
        (
            "http/auth.rs",
            "fn f() { crate::http::error::ApiError::NotFound; let _ = \"crate::db\"; }",
        ),
    ]
    .into_iter()
    .map(|(file, code)| (PathBuf::from(file), code_of(code)))
    .collect();
    let problems = violations(&order, &sources);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0]
            .starts_with("db/mod.rs (layer `db`) imports `crate::http::error::is_unavailable`"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("http/auth.rs and http/error.rs use each other"),
        "{}",
        problems[1]
    );
}

#[test]
fn use_trees_expand_into_their_paths() {
    let paths = expand("crate::{a::{self, b}, c::d as e, f::*}");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        ["crate::a", "crate::a::b", "crate::c::d", "crate::f"]
    );
}
