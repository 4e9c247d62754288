//! The library's layers, enforced: every module's imports of `crate::…` (use declarations,
//! groups included, paths in code, `super::` and `self::`) point down the layers or stay in
//! their own, and no chain of them comes back to where it started. Comments, string literals
//! and `#[cfg(test)]` items are left out: a unit test may reach anywhere. The crate's own extern
//! names (`extern crate self as m`) read as `crate`; a macro_rules! body's `crate::` paths are
//! imports of every module that invokes the macro; `#[path]` is refused (a file's folder is its
//! layer).
//!   sys     bindings to glibc, the kernel and jemalloc: nothing of the crate outside sys
//!   alloc   runs inside the host's malloc: sys
//!   python  runs in CPython's threads: sys, alloc
//!   worker  the worker thread: sys, alloc, python
//!   init, capi, lib.rs (the top): anything
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Layers from the bottom; a module is in the layer its first path segment names, else the top.
const LAYERS: &[&str] = &["sys", "alloc", "python", "worker"];
/// Modules at the top, beside lib.rs (the crate root, "crate").
const TOP: &[&str] = &["init", "capi"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Ident(usize),
    Path, // ::
    Punct(char),
}

struct Lexed {
    toks: Vec<(Tok, usize)>, // token and its line
    idents: Vec<String>,
}

impl Lexed {
    fn ident(&self, i: usize) -> Option<&str> {
        match self.toks.get(i) {
            Some((Tok::Ident(k), _)) => Some(&self.idents[*k]),
            _ => None,
        }
    }

    fn is(&self, i: usize, t: Tok) -> bool {
        self.toks.get(i).is_some_and(|(k, _)| *k == t)
    }
}

/// Tokens of Rust source without its comments and the contents of its string and char literals.
fn lex(src: &str) -> Lexed {
    let c: Vec<char> = src.chars().collect();
    let (mut toks, mut idents, mut line, mut i) = (Vec::new(), Vec::new(), 1, 0);
    let lines = |s: &[char]| s.iter().filter(|&&x| x == '\n').count();
    while i < c.len() {
        let rest = &c[i..];
        let start = i;
        if rest.starts_with(&['/', '/']) {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            loop {
                if c[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if c[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
                if i >= c.len() {
                    break;
                }
            }
        } else if c[i] == '"' || ((c[i] == 'r' || c[i] == 'b' || c[i] == 'c') && raw_or_prefixed_string(rest).is_some()) {
            i += raw_or_prefixed_string(rest).unwrap_or_else(|| plain_string(rest));
        } else if c[i] == '\'' {
            // a char literal ('a', '\n', '\u{1F600}') or a lifetime ('a)
            if rest.get(1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if rest.get(2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c[i].is_alphabetic() || c[i] == '_' {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_owned).unwrap_or(word);
            toks.push((Tok::Ident(idents.len()), line));
            idents.push(word);
        } else if rest.starts_with(&[':', ':']) {
            toks.push((Tok::Path, line));
            i += 2;
        } else {
            if !c[i].is_whitespace() {
                toks.push((Tok::Punct(c[i]), line));
            }
            i += 1;
        }
        line += lines(&c[start..i.min(c.len())]);
    }
    Lexed { toks, idents }
}

/// Length of a "…" literal starting at s[0].
fn plain_string(s: &[char]) -> usize {
    let mut i = 1;
    while i < s.len() && s[i] != '"' {
        i += if s[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Length of a b"…", c"…", r"…", r#"…"#, br#"…"# literal starting at s[0], if one does.
fn raw_or_prefixed_string(s: &[char]) -> Option<usize> {
    let mut i = 0;
    if s[0] == 'b' || s[0] == 'c' {
        i += 1;
    }
    if s.get(i) == Some(&'"') {
        return Some(i + plain_string(&s[i..]));
    }
    if s.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = s[i..].iter().take_while(|&&x| x == '#').count();
    i += hashes;
    if s.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < s.len() {
        if s[i] == '"' && s[i + 1..].iter().take(hashes).filter(|&&x| x == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(s.len())
}

/// Index just past the item starting at `i`: through its `;` or its `{…}` body.
fn skip_item(lx: &Lexed, mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < lx.toks.len() {
        match lx.toks[i].0 {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return i + 1,
            Tok::Punct('{') if depth == 0 => return matching_brace(lx, i) + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

fn matching_brace(lx: &Lexed, mut i: usize) -> usize {
    let mut depth = 0;
    while i < lx.toks.len() {
        match lx.toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index past the attribute `#[…]` at `i`, and whether it is `#[cfg(test)]`.
fn attribute(lx: &Lexed, i: usize) -> Option<(usize, bool)> {
    if !(lx.is(i, Tok::Punct('#')) && lx.is(i + 1, Tok::Punct('['))) {
        return None;
    }
    let mut j = i + 1;
    let mut depth = 0;
    while j < lx.toks.len() {
        match lx.toks[j].0 {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let words: Vec<String> = (i + 2..j).map(|k| lx.ident(k).map_or_else(|| format!("{:?}", lx.toks[k].0), str::to_owned)).collect();
    let test = words == ["cfg", "Punct('(')", "test", "Punct(')')"];
    Some((j + 1, test))
}

/// A path as written: its segments (`crate`, `super`, `self`, names) and line.
type Written = (Vec<String>, usize);

/// A path as written in a module of a file: the inline modules around it, the path, its line.
type Found = (Vec<String>, Vec<String>, usize);

/// The paths a use declaration's tree names, groups expanded; `i` is just past `use`.
fn use_tree(lx: &Lexed, mut i: usize, prefix: &[String], out: &mut Vec<Written>) -> usize {
    let mut path = prefix.to_vec();
    let line = lx.toks.get(i).map_or(0, |t| t.1);
    if lx.is(i, Tok::Path) {
        i += 1;
    }
    loop {
        if let Some(w) = lx.ident(i) {
            path.push(w.to_owned());
            i += 1;
            if lx.is(i, Tok::Path) {
                i += 1;
                continue;
            }
            if lx.ident(i) == Some("as") {
                i += 2;
            }
            out.push((path, line));
            return i;
        }
        if lx.is(i, Tok::Punct('*')) {
            out.push((path, line));
            return i + 1;
        }
        if lx.is(i, Tok::Punct('{')) {
            i += 1;
            while !lx.is(i, Tok::Punct('}')) && i < lx.toks.len() {
                i = use_tree(lx, i, &path, out);
                if lx.is(i, Tok::Punct(',')) {
                    i += 1;
                }
            }
            return i + 1;
        }
        return i + 1; // not a path: let the caller move on
    }
}

/// Every path of `src` that may name a module of this crate: use declarations and paths in
/// code starting with `crate`, `super`, `self` or one of the crate's own extern names `own`
/// (`extern crate self as m`, read as `crate`), with the inline modules around them for
/// `super` to resolve, and in the crate root paths starting with a root module.
fn paths(src: &str, root_modules: &BTreeSet<String>, own: &BTreeSet<String>, is_root: bool) -> Vec<Found> {
    let lx = lex(src);
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new(); // inline module and its closing brace
    let mut i = 0;
    while i < lx.toks.len() {
        while inline.last().is_some_and(|m| m.1 <= i) {
            inline.pop();
        }
        let scope: Vec<String> = inline.iter().map(|m| m.0.clone()).collect();
        if let Some((next, test)) = attribute(&lx, i) {
            i = if test { skip_item(&lx, next) } else { next };
            continue;
        }
        match lx.ident(i) {
            Some("use") => {
                let mut found = Vec::new();
                i = use_tree(&lx, i + 1, &[], &mut found);
                for (mut p, line) in found {
                    if p.first().is_some_and(|s| own.contains(s)) {
                        p[0] = "crate".to_owned();
                    }
                    if p.first().is_some_and(|s| matches!(s.as_str(), "crate" | "super" | "self") || (is_root && root_modules.contains(s))) {
                        out.push((scope.clone(), p, line));
                    }
                }
                continue;
            }
            Some("mod") if lx.ident(i + 1).is_some() && lx.is(i + 2, Tok::Punct('{')) => {
                inline.push((lx.ident(i + 1).unwrap_or_default().to_owned(), matching_brace(&lx, i + 2)));
                i += 3;
                continue;
            }
            // pub(in crate::…) restricts visibility; it imports nothing
            Some("in") if lx.is(i.wrapping_sub(1), Tok::Punct('(')) => {
                i += 1;
                while lx.ident(i).is_some() || lx.is(i, Tok::Path) {
                    i += 1;
                }
                continue;
            }
            Some(w)
                if lx.is(i + 1, Tok::Path)
                    && !lx.is(i.wrapping_sub(1), Tok::Path)
                    && (matches!(w, "crate" | "super" | "self") || own.contains(w) || (is_root && root_modules.contains(w))) =>
            {
                let line = lx.toks[i].1;
                let mut p = vec![if own.contains(w) { "crate" } else { w }.to_owned()];
                i += 1;
                while lx.is(i, Tok::Path) && lx.ident(i + 1).is_some() {
                    p.push(lx.ident(i + 1).unwrap_or_default().to_owned());
                    i += 2;
                }
                out.push((scope.clone(), p, line));
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The module a written path lands in: the longest known module that prefixes it.
/// `from` is the file's module, `scope` the inline modules around the path.
fn resolve(from: &str, scope: &[String], p: &[String], modules: &BTreeSet<String>) -> String {
    let mut at: Vec<&str> = if from == "crate" { vec![] } else { from.split("::").collect() };
    at.extend(scope.iter().map(String::as_str));
    let mut rest = p;
    match p[0].as_str() {
        "crate" => {
            at.clear();
            rest = &p[1..];
        }
        "self" | "super" => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => {}
                    "super" => {
                        at.pop();
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => at.clear(), // a root module named from the crate root
    }
    let full: Vec<&str> = at.into_iter().chain(rest.iter().map(String::as_str)).collect();
    (0..=full.len())
        .rev()
        .map(|n| if n == 0 { "crate".to_owned() } else { full[..n].join("::") })
        .find(|m| modules.contains(m))
        .unwrap_or_else(|| "crate".to_owned())
}

fn layer(module: &str) -> Option<usize> {
    let first = module.split("::").next().unwrap_or(module);
    if let Some(l) = LAYERS.iter().position(|&l| l == first) {
        return Some(l);
    }
    (module == "crate" || TOP.contains(&first)).then_some(LAYERS.len())
}

fn layer_name(module: &str) -> &'static str {
    layer(module).map_or("no layer", |l| LAYERS.get(l).copied().unwrap_or("top"))
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// src/alloc/accounting.rs → alloc::accounting; src/alloc/mod.rs → alloc; src/lib.rs → crate.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut segs: Vec<String> = rel.with_extension("").iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if segs.last().is_some_and(|s| s == "mod") || segs == ["lib"] {
        segs.pop();
    }
    if segs.is_empty() { "crate".to_owned() } else { segs.join("::") }
}

/// One import: from a module to another, first seen where.
struct Edge {
    to: String,
    at: String,
}

type Graph = BTreeMap<String, BTreeMap<String, Edge>>;

fn graph(src: &Path) -> (Graph, Vec<String>) {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let root_modules: BTreeSet<String> = modules.iter().filter(|m| !m.contains("::") && *m != "crate").cloned().collect();
    let place = |f: &Path, line: usize| format!("{}:{line}", f.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(f).display());
    let texts: Vec<(PathBuf, String)> =
        files.iter().map(|f| (f.clone(), std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))).collect();
    let lexed: Vec<Lexed> = texts.iter().map(|(_, t)| lex(t)).collect();
    // What the crate-wide reading needs first: the crate's own extern names, the macros' paths.
    let (mut own, mut macros, mut refused) = (BTreeSet::new(), BTreeMap::<String, Vec<(Vec<String>, String)>>::new(), Vec::new());
    for ((f, _), lx) in texts.iter().zip(&lexed) {
        for k in 0..lx.toks.len() {
            if [lx.ident(k), lx.ident(k + 1), lx.ident(k + 2), lx.ident(k + 3)] == [Some("extern"), Some("crate"), Some("self"), Some("as")]
                && let Some(name) = lx.ident(k + 4)
            {
                own.insert(name.to_owned());
            }
            // A file's folder is its layer: #[path] would compile a file as a module of another.
            if lx.is(k, Tok::Punct('#')) && lx.is(k + 1, Tok::Punct('[')) && lx.ident(k + 2) == Some("path") {
                refused.push(format!("#[path] at {}: a module's file must be where its name puts it (its folder is its layer)", place(f, lx.toks[k].1)));
            }
        }
    }
    for ((f, _), lx) in texts.iter().zip(&lexed) {
        for (name, p, line) in macro_paths(lx, &own) {
            macros.entry(name).or_default().push((p, place(f, line)));
        }
    }
    let mut g = Graph::new();
    for (((f, text), lx), from) in texts.iter().zip(&lexed).zip(files.iter().map(|f| module_of(src, f))) {
        let edges = g.entry(from.clone()).or_default();
        let mut add = |to: String, at: String| {
            if to != from && !edges.contains_key(&to) {
                edges.insert(to.clone(), Edge { to, at });
            }
        };
        for (scope, p, line) in paths(text, &root_modules, &own, from == "crate") {
            add(resolve(&from, &scope, &p, &modules), format!("{} ({})", place(f, line), p.join("::")));
        }
        // A macro's body is expanded where it is invoked: its paths are the invoker's imports.
        for k in 0..lx.toks.len() {
            if let Some(name) = lx.ident(k).filter(|_| lx.is(k + 1, Tok::Punct('!')))
                && let Some(body) = macros.get(name)
            {
                for (p, defined) in body {
                    add(resolve(&from, &[], p, &modules), format!("{} ({name}!, defined at {defined}: {})", place(f, lx.toks[k].1), p.join("::")));
                }
            }
        }
    }
    (g, refused)
}

/// The `crate::` paths (or through the crate's own extern names) in the bodies of the
/// macro_rules! of a file: (macro, path, line).
fn macro_paths(lx: &Lexed, own: &BTreeSet<String>) -> Vec<(String, Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lx.toks.len() {
        if lx.ident(i) == Some("macro_rules")
            && lx.is(i + 1, Tok::Punct('!'))
            && let Some(name) = lx.ident(i + 2)
        {
            let end = skip_item(lx, i + 3);
            for k in i + 3..end {
                if lx.ident(k).is_some_and(|w| w == "crate" || own.contains(w)) && lx.is(k + 1, Tok::Path) && !lx.is(k.wrapping_sub(1), Tok::Path) {
                    let mut p = vec!["crate".to_owned()];
                    let mut j = k + 1;
                    while lx.is(j, Tok::Path) && lx.ident(j + 1).is_some() {
                        p.push(lx.ident(j + 1).unwrap_or_default().to_owned());
                        j += 2;
                    }
                    out.push((name.to_owned(), p, lx.toks[k].1));
                }
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// Every problem of the library under `src`.
fn check(src: &Path) -> Vec<String> {
    let (g, mut refused) = graph(src);
    refused.extend(problems(g));
    refused
}

/// What breaks the rules: imports up a layer, modules in no layer, and one cycle per strongly
/// connected set of modules (the shortest through its first module, each import with its place).
fn problems(g: Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (from, edges) in &g {
        let Some(lf) = layer(from) else {
            out.push(format!("{from} is in no layer: put it in one of {LAYERS:?} or at the top ({TOP:?})"));
            continue;
        };
        for e in edges.values() {
            if layer(&e.to).is_some_and(|lt| lt > lf) {
                out.push(format!("import up a layer: {from} ({}) -> {} ({}) at {}", layer_name(from), e.to, layer_name(&e.to), e.at));
            }
        }
    }
    for scc in components(&g) {
        let cycle = shortest_cycle(&g, &scc[0]);
        let steps: Vec<String> = cycle.windows(2).map(|w| format!("  {} -> {}   at {}", w[0], w[1], g[&w[0]][&w[1]].at)).collect();
        out.push(format!("import cycle through {} modules ({}):\n{}", scc.len(), scc.join(", "), steps.join("\n")));
    }
    out
}

/// Strongly connected sets of more than one module (Tarjan), each sorted.
fn components(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flat_map(|e| e.keys()) {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let lw = t.low[w.as_str()];
                t.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if t.on.contains(w.as_str()) {
                let iw = t.index[w.as_str()];
                t.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The shortest chain of imports from `start` back to it (breadth first): start, …, start.
fn shortest_cycle(g: &Graph, start: &str) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(v) = queue.pop_front() {
        for w in g.get(&v).into_iter().flat_map(|e| e.keys()) {
            if w == start {
                let mut path = vec![v.clone()];
                while let Some(p) = prev.get(&path[path.len() - 1]) {
                    path.push(p.clone());
                }
                path.reverse();
                path.push(start.to_owned());
                return path;
            }
            if w != start && !prev.contains_key(w) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    vec![start.to_owned()]
}

#[test]
fn imports_go_down_the_layers_without_cycles() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&src);
    assert!(problems.is_empty(), "the library's layers are broken:\n{}", problems.join("\n"));
}

/// The reader itself: groups, renames, code paths, super, comments, strings and test modules.
#[test]
fn reads_imports_as_the_compiler_would() {
    let src = r##"
        //! crate::sys::doc is a comment
        use crate::{alloc::{accounting as acc, backend::{self, Family}}, sys::glibc};
        use super::sibling;
        /* use crate::python::block; /* nested */ crate::python::still */
        pub(in crate::worker) fn f() -> &'static str {
            let _ = crate::sys::clock::now();
            let _ = 'x';
            "crate::python::string"
        }
        #[cfg(test)]
        mod tests {
            use crate::init;
            use super::*;
        }
        mod inner {
            use super::super::cousin;
        }
    "##;
    let modules: BTreeSet<String> = [
        "crate",
        "alloc",
        "alloc::accounting",
        "alloc::backend",
        "sys",
        "sys::glibc",
        "sys::clock",
        "worker",
        "worker::sibling",
        "worker::cousin",
        "worker::me",
        "python",
        "init",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let found: BTreeSet<String> =
        paths(src, &BTreeSet::new(), &BTreeSet::new(), false).iter().map(|(scope, p, _)| resolve("worker::me", scope, p, &modules)).collect();
    let expected: BTreeSet<String> =
        ["alloc::accounting", "alloc::backend", "sys::glibc", "sys::clock", "worker::sibling", "worker::cousin"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, expected);
}

/// The problems of a small library whose files are `files` (path under src, text).
fn problems_of(name: &str, files: &[(&str, &str)]) -> Vec<String> {
    let src = std::env::temp_dir().join(format!("layers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&src);
    for (path, text) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let found = check(&src);
    let _ = std::fs::remove_dir_all(&src);
    found
}

const ROOT: (&str, &str) = ("lib.rs", "mod init;\nmod sys;\nmod worker;\n");
const INIT: (&str, &str) = ("init.rs", "pub(crate) fn config() -> u32 { 1 }\n");
const WORKER: (&str, &str) = ("worker/mod.rs", "mod report_gather;\nmod policy;\npub(crate) mod release;\n");
const GATHER: (&str, &str) = ("worker/report_gather.rs", "pub(crate) fn level() -> u32 { 2 }\n");
const POLICY: (&str, &str) = ("worker/policy.rs", "");
const RELEASE: (&str, &str) = ("worker/release.rs", "pub(crate) fn release() {}\n");

fn up_from(problems: &[String], from: &str) -> bool {
    problems.iter().any(|p| p.starts_with(&format!("import up a layer: {from} ")))
}

/// An upward import written through the crate's own extern name (`extern crate self as m`).
#[test]
fn an_upward_import_through_the_crates_own_name_is_seen() {
    let lib = ("lib.rs", "extern crate self as m;\nmod init;\nmod sys;\nmod worker;\n");
    let p = problems_of("extern-self", &[lib, INIT, WORKER, GATHER, POLICY, RELEASE, ("sys/mod.rs", "pub(crate) fn up() -> u32 { m::init::config() }\n")]);
    assert!(up_from(&p, "sys"), "sys -> init written m::init::config() (extern crate self as m) is not seen:\n{}", p.join("\n"));
}

/// An upward import in a file that `#[path]` makes a module of a lower layer than its place.
#[test]
fn an_upward_import_in_a_path_attribute_module_is_seen() {
    let sys = ("sys/mod.rs", "#[path = \"../worker/up.rs\"]\npub(crate) mod up;\n");
    let up = ("worker/up.rs", "pub(crate) fn up() { crate::worker::release::release() }\n");
    let p = problems_of("path-attr", &[ROOT, INIT, WORKER, GATHER, POLICY, RELEASE, sys, up]);
    let refused = p.iter().any(|l| l.starts_with("#[path] at "));
    assert!(refused || up_from(&p, "sys::up") || up_from(&p, "sys"), "sys::up (src/worker/up.rs by #[path]) -> worker::release is not seen:\n{}", p.join("\n"));
}

/// An upward import in a macro defined at the top and expanded in a lower layer.
#[test]
fn an_upward_import_in_a_macro_from_the_top_is_seen() {
    let lib = ("lib.rs", "macro_rules! top_config { () => { crate::init::config() } }\nmod init;\nmod sys;\nmod worker;\n");
    let p = problems_of("macro", &[lib, INIT, WORKER, GATHER, POLICY, RELEASE, ("sys/mod.rs", "pub(crate) fn up() -> u32 { top_config!() }\n")]);
    assert!(up_from(&p, "sys"), "sys -> init through the macro top_config!() from lib.rs is not seen:\n{}", p.join("\n"));
}

/// An upward import re-exported by a module of a lower layer (for its neighbours to reach the
/// top through it) is seen where it is re-exported: the re-export is an upward import itself.
#[test]
fn an_upward_re_export_is_seen_where_it_is_made() {
    let gather = ("worker/report_gather.rs", "pub(crate) use crate::init::config as top_config;\n");
    let policy = ("worker/policy.rs", "pub(crate) fn up() -> u32 { super::report_gather::top_config() }\n");
    let p = problems_of("re-export", &[ROOT, INIT, WORKER, gather, policy, RELEASE, ("sys/mod.rs", "")]);
    assert!(up_from(&p, "worker::report_gather"), "worker::report_gather's re-export of init::config is not seen:\n{}", p.join("\n"));
}

/// The check on these small libraries sees a plain upward import (so that the tests above
/// fail for what they test, not for the small library).
#[test]
fn a_plain_upward_import_in_a_small_library_is_seen() {
    let p = problems_of("plain", &[ROOT, INIT, WORKER, GATHER, POLICY, RELEASE, ("sys/mod.rs", "pub(crate) fn up() -> u32 { crate::init::config() }\n")]);
    assert!(up_from(&p, "sys"), "{}", p.join("\n"));
    let clean = problems_of("clean", &[ROOT, INIT, WORKER, GATHER, POLICY, RELEASE, ("sys/mod.rs", "")]);
    assert!(clean.is_empty(), "{}", clean.join("\n"));
}
